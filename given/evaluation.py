"""The measuring code behind the notebook (Exercise 4; given code): every technique measured the same way.

Read it top to bottom:

1. Text: ``load_wikitext_texts`` (the hub by default, a local folder offline, a loud fallback to a
   small built-in sample). Models and tokenizers: ``given/models.py``.
2. Perplexity: ``build_masked_eval_set`` fixes the masked inputs once (seeded, independent of any
   model or device); ``masked_lm_perplexity`` scores every model on exactly those tokens.
3. Latency: ``make_latency_batch`` + ``measure_latency`` (warm-up, median and quartiles of repeats).
4. ``measure`` gives one table row (with the ``model`` it came from); ``results_table``, the plots
   and ``save_results`` the summary.
5. ``distill_bert_student``: Exercise 3 on wikitext in one call (``alpha=0.0``: its control).
"""
import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import set_seed

from given.manifest import SHARED_DATA_DIR
from given.models import BUILTIN_TEXT_SAMPLE, announce, hub_reachable
from given.sizes import stored_bytes, storage_dtypes
from given.timing import time_call
from given.torch_utils import IGNORE_INDEX, model_device

WIKITEXT_HUB_ID = "Salesforce/wikitext"
"""The hub's ``wikitext`` dataset under its current, future-proof name (``wikitext`` is an alias)."""
SHARED_WIKITEXT_DIR = SHARED_DATA_DIR / "wikitext-2-raw-v1"
PUBLISHED_BERT_BASE_PERPLEXITY = 4.0
"""About 4: bert-base-uncased, 15% of wikitext-2 tokens masked (the anchor the notebook prints)."""


@contextlib.contextmanager
def skip_if_not_implemented(what):
    """Run a notebook block; if the student's code raises ``NotImplementedError``, say so and go on.

    Only ``NotImplementedError`` (an unfinished stub) is caught: every other error still fails.
    """
    try:
        yield
    except NotImplementedError as error:
        print(f"Skipped {what}: not implemented yet ({error}). Finish it, then re-run this cell.")


# ----------------------------------------------------------------------------------------------
# 1. Loading the text (hub by default, local paths offline, loud fallback)
# ----------------------------------------------------------------------------------------------

def _raw_file_for(split, path):
    path = Path(path).expanduser()
    if path.is_file():
        return path
    name = {"validation": "valid"}.get(split, split)
    candidate = path / f"wiki.{name}.raw"
    if not candidate.is_file():
        raise FileNotFoundError(f"no wikitext file for split {split!r}: expected {candidate} "
                                "(or give the path of a .raw file)")
    return candidate


def load_wikitext_texts(split="test", path=None, *, offline=False):
    """The rows of wikitext-2-raw-v1 ``split`` as a list of strings (empty rows kept as ``""``).

    Args:
        split: "test", "validation" or "train".
        path: None -> the hub, ``datasets.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1")``
            (the dataset also known as "wikitext"); a ``.raw`` file, or a folder holding
            ``wiki.{test,valid,train}.raw`` -> read locally with the ``"text"`` loader, whitespace-only
            rows mapped to ``""``. Both give exactly the hub's rows (test: 4,358 rows).
        offline: never contact the hub. With no hub and no path: ``../shared`` wikitext when
            present, else (loudly) the small built-in sample.
    """
    import datasets

    if split not in ("test", "validation", "train"):
        raise ValueError(f"split must be 'test', 'validation' or 'train', got {split!r}")
    if path is None and not offline and hub_reachable():
        return list(datasets.load_dataset(WIKITEXT_HUB_ID, "wikitext-2-raw-v1", split=split)["text"])
    if path is None and SHARED_WIKITEXT_DIR.is_dir():
        print(f"Hub not used: reading wikitext-2 {split} from {SHARED_WIKITEXT_DIR}")
        path = SHARED_WIKITEXT_DIR
    if path is None:
        announce("Neither the dataset hub nor a local wikitext path is available: using a SMALL "
                 "BUILT-IN TEXT SAMPLE instead of wikitext-2. Perplexities are not comparable "
                 "with published numbers.")
        return BUILTIN_TEXT_SAMPLE.splitlines(keepends=True)
    raw_file = _raw_file_for(split, path)
    rows = datasets.load_dataset("text", data_files={split: str(raw_file)}, keep_linebreaks=True,
                                 split=split)["text"]
    return [row if row.strip() else "" for row in rows]


# ----------------------------------------------------------------------------------------------
# 2. Masked-LM perplexity on a fixed, seeded masked evaluation set
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MaskedEvalSet:
    """Masked-LM evaluation inputs, fixed once: every model is scored on exactly these tokens.

    All three tensors are int64 of shape (num_windows, seq_len), on the CPU. Each window is
    ``[CLS] t_1 ... t_k [SEP]`` followed by ``[PAD]`` up to ``seq_len`` (only the last window can be
    short).
    """

    input_ids: torch.Tensor
    """Token ids with every scored position replaced by [MASK] (the model never sees those tokens)."""
    attention_mask: torch.Tensor
    """1 for [CLS], text tokens and [SEP]; 0 for padding."""
    labels: torch.Tensor
    """The original token id at scored positions, ``IGNORE_INDEX`` (-100) everywhere else."""

    @property
    def num_masked(self):
        """How many tokens every model is scored on."""
        return int((self.labels != IGNORE_INDEX).sum())

    def __len__(self):
        return self.input_ids.shape[0]

    def batches(self, batch_size):
        """Consecutive windows as dicts of (batch, seq_len) tensors: input_ids, attention_mask, labels."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield {name: getattr(self, name)[start:start + batch_size]
                   for name in ("input_ids", "attention_mask", "labels")}


def tokenize_stream(texts, tokenizer):
    """The Hugging Face perplexity recipe's first step: join the rows, tokenize once, no specials.

    Returns a 1-D int64 tensor of token ids (wikitext-2 test with BERT uncased: 273,178 tokens).
    """
    if isinstance(texts, str):
        texts = [texts]
    joined = "\n\n".join(texts)
    if not joined.strip():
        raise ValueError("no text to evaluate on: every row is empty")
    ids = tokenizer(joined, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def chunk_into_windows(token_ids, seq_len, *, cls_id, sep_id, pad_id):
    """Cut a token stream into fixed windows ``[CLS] ... [SEP]`` of ``seq_len`` (the last one padded).

    Returns ``(input_ids, attention_mask)``, int64 of shape (ceil(n / (seq_len - 2)), seq_len).
    """
    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3 ([CLS], one token, [SEP]), got {seq_len}")
    body = seq_len - 2
    num_windows = math.ceil(len(token_ids) / body)
    input_ids = torch.full((num_windows, seq_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((num_windows, seq_len), dtype=torch.long)
    for row, start in enumerate(range(0, len(token_ids), body)):
        piece = token_ids[start:start + body]
        input_ids[row, 0] = cls_id
        input_ids[row, 1:len(piece) + 1] = piece
        input_ids[row, len(piece) + 1] = sep_id
        attention_mask[row, :len(piece) + 2] = 1
    return input_ids, attention_mask


def mask_tokens(input_ids, attention_mask, *, special_ids, mask_id, mask_fraction=0.15, seed=0):
    """Replace a seeded ``mask_fraction`` of the real, non-special tokens by [MASK].

    Exactly ``round(mask_fraction * candidates)`` positions are chosen, uniformly without
    replacement, with a private ``torch.Generator`` (the global RNG is untouched), so the same
    inputs and seed always give the same mask, whatever model or device comes next.

    Every chosen token becomes [MASK]: BERT's 80/10/10 rule (10% random, 10% unchanged) is a
    training trick; at evaluation it would leave 10% of the scored tokens visible to the model.

    Args:
        input_ids, attention_mask: int64 (N, L); padding (mask 0) and ``special_ids`` are never chosen.
    Returns:
        ``(masked_input_ids, labels)``: int64 (N, L); labels hold the original id at chosen
        positions and ``IGNORE_INDEX`` elsewhere. The inputs are not modified.
    """
    if not 0.0 < mask_fraction < 1.0:
        raise ValueError(f"mask_fraction must be in (0, 1), got {mask_fraction}")
    if input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask "
                         f"{tuple(attention_mask.shape)} must have the same shape")
    candidates = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(sorted(special_ids)))
    positions = candidates.flatten().nonzero().squeeze(1)
    num_masked = round(mask_fraction * len(positions))
    if num_masked == 0:
        raise ValueError(f"{len(positions)} maskable tokens: too few to mask {mask_fraction:.0%} of them")
    generator = torch.Generator().manual_seed(seed)
    chosen = positions[torch.randperm(len(positions), generator=generator)[:num_masked]]

    labels = torch.full_like(input_ids, IGNORE_INDEX).flatten()
    labels[chosen] = input_ids.flatten()[chosen]
    masked_input_ids = input_ids.flatten().clone()
    masked_input_ids[chosen] = mask_id
    return masked_input_ids.view_as(input_ids), labels.view_as(input_ids)


def windows_from_texts(texts, tokenizer, *, seq_len=128, max_tokens=None):
    """Tokenize ``texts`` once and cut the stream into windows: ``(input_ids, attention_mask)``."""
    token_ids = tokenize_stream(texts, tokenizer)
    if max_tokens is not None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        token_ids = token_ids[:max_tokens]
    return chunk_into_windows(token_ids, seq_len, cls_id=tokenizer.cls_token_id,
                              sep_id=tokenizer.sep_token_id, pad_id=tokenizer.pad_token_id)


def build_masked_eval_set(texts, tokenizer, *, seq_len=128, max_tokens=None, mask_fraction=0.15, seed=0):
    """The fixed masked-LM evaluation set for ``texts`` (e.g. the wikitext-2 test rows).

    Args:
        seq_len: window length including [CLS] and [SEP] (BERT was pre-trained mostly at 128).
        max_tokens: keep the first ``max_tokens`` text tokens (the evaluation size); None keeps all.
        mask_fraction, seed: see ``mask_tokens``.
    """
    input_ids, attention_mask = windows_from_texts(texts, tokenizer, seq_len=seq_len, max_tokens=max_tokens)
    masked_input_ids, labels = mask_tokens(input_ids, attention_mask, special_ids=tokenizer.all_special_ids,
                                           mask_id=tokenizer.mask_token_id, mask_fraction=mask_fraction,
                                           seed=seed)
    return MaskedEvalSet(masked_input_ids, attention_mask, labels)


def _logits_at(model, input_ids, attention_mask, scored):
    """Vocabulary logits at the ``scored`` positions only, shape (num_scored, vocab).

    For a Hugging Face ``...ForMaskedLM`` with a BERT body (``.bert``) and head (``.cls``), the head
    runs on the scored positions only: it acts on each position independently, so this is exact,
    and it skips ~85% of the (tokens x 768 x 30,522) vocabulary projection. Any other model
    is called as ``model(input_ids=..., attention_mask=...)`` and must return logits (or ``.logits``).
    """
    if hasattr(model, "bert") and hasattr(model, "cls"):
        hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return model.cls(hidden[scored])
    output = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = getattr(output, "logits", output)
    return logits[scored]


@torch.inference_mode()
def masked_lm_perplexity(model, eval_set, *, batch_size=32, progress=False):
    """Masked-LM perplexity: exp of the mean cross-entropy over every scored token of ``eval_set``.

    Token-weighted: the summed negative log-likelihood of all scored tokens (in float64) divided by
    their number, not a mean of per-batch means. Padding, [CLS]/[SEP] and unmasked tokens never
    count. Inputs move to the model's device; logits are scored in float32 whatever the model's
    dtype.

    Returns:
        dict with ``perplexity``, ``loss`` (mean NLL in nats) and ``masked_tokens``.
    """
    from tqdm.auto import tqdm

    model.eval()
    device = model_device(model)
    total_nll, total_tokens = 0.0, 0
    num_batches = math.ceil(len(eval_set) / batch_size)
    for batch in tqdm(eval_set.batches(batch_size), total=num_batches, desc="perplexity",
                      disable=not progress, leave=False):
        labels = batch["labels"].to(device)
        scored = labels != IGNORE_INDEX
        if not scored.any():
            continue
        logits = _logits_at(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), scored)
        total_nll += F.cross_entropy(logits.float(), labels[scored], reduction="sum").item()
        total_tokens += int(scored.sum())
    if total_tokens == 0:
        raise ValueError("the evaluation set has no scored ([MASK]ed) tokens")
    loss = total_nll / total_tokens
    perplexity = math.exp(loss) if loss < 700 else math.inf  # exp overflows float64 beyond ~709
    return {"perplexity": perplexity, "loss": loss, "masked_tokens": total_tokens}


# ----------------------------------------------------------------------------------------------
# 3. Latency
# ----------------------------------------------------------------------------------------------

def make_latency_batch(eval_set, batch_size=8):
    """One fixed batch for timing: the first ``batch_size`` windows (input_ids, attention_mask), on CPU."""
    if not 1 <= batch_size <= len(eval_set):
        raise ValueError(f"batch_size must be in [1, {len(eval_set)}] (windows in the set), got {batch_size}")
    return {"input_ids": eval_set.input_ids[:batch_size], "attention_mask": eval_set.attention_mask[:batch_size]}


@torch.inference_mode()
def measure_latency(model, batch, *, warmup=3, repeats=10):
    """Time ``model(**batch)`` on the model's device: median and spread of ``repeats`` runs.

    The batch is copied to the device once, before any timing; ``warmup`` untimed runs come first
    (kernel selection, caches, lazy initialisation); ``given.timing.time_call`` does the timing
    (CUDA synchronized around each run).

    Returns:
        dict: ``device``, ``latency_ms`` (median), ``latency_q1_ms``/``latency_q3_ms`` (quartiles),
        ``latency_min_ms``/``latency_max_ms``, ``tokens_per_s`` (real tokens / median time),
        ``threads`` and ``batch_shape``.
    """
    model.eval()
    device = model_device(model)
    batch = {name: tensor.to(device) for name, tensor in batch.items()}
    timing = time_call(lambda: model(**batch), warmup=warmup, repeats=repeats)
    num_tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
    return {"device": str(device), "latency_ms": 1e3 * timing["median"], "latency_q1_ms": 1e3 * timing["q1"],
            "latency_q3_ms": 1e3 * timing["q3"], "latency_min_ms": 1e3 * timing["min"],
            "latency_max_ms": 1e3 * timing["max"], "tokens_per_s": num_tokens / timing["median"],
            "threads": timing["threads"], "batch_shape": tuple(batch["input_ids"].shape)}


# ----------------------------------------------------------------------------------------------
# 4. One row per technique, the summary table, plots, files
# ----------------------------------------------------------------------------------------------

def measure(model, eval_set, latency_batch, name, *, model_name=None, batch_size=32, warmup=3, repeats=10,
            progress=True, **extra):
    """Measure one compressed model: one row of the summary table (a dict).

    Columns: ``technique`` (``name``), ``model`` (``model_name``: which model the technique was
    applied to, e.g. ``resolved.name``; None when not given), ``device``, ``dtype`` (as stored),
    ``params``, ``size_mb`` (parameters + buffers as stored, 1 MB = 10^6 bytes), ``perplexity``,
    ``loss``, ``masked_tokens``, ``latency_ms`` with quartiles, ``tokens_per_s``, then ``extra``
    columns (e.g. ``sparse_size_mb=`` for a pruned model). The model is measured where it is.
    """
    row = {"technique": name, "model": model_name, "device": str(model_device(model)),
           "dtype": storage_dtypes(model), "params": sum(p.numel() for p in model.parameters()),
           "size_mb": stored_bytes(model) / 1e6}
    row.update(masked_lm_perplexity(model, eval_set, batch_size=batch_size, progress=progress))
    timing = measure_latency(model, latency_batch, warmup=warmup, repeats=repeats)
    row.update({key: value for key, value in timing.items() if key.startswith(("latency", "tokens"))})
    row.update(extra)
    print(f"{name:<32} {row['size_mb']:9.2f} MB   perplexity {row['perplexity']:10.3f}   "
          f"{row['latency_ms']:8.2f} ms ({row['device']}, {row['dtype']})", flush=True)
    return row


def results_table(rows, baseline="FP32"):
    """A pandas DataFrame of ``measure`` rows, with ratios against the ``baseline`` technique.

    Added columns: ``x_smaller`` (baseline size / size), ``x_faster`` (baseline latency /
    latency; only meaningful between rows on the same device) and ``perplexity_change``.
    """
    import pandas as pd

    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError("no rows to tabulate")
    if baseline in set(table["technique"]):
        base = table.loc[table["technique"] == baseline].iloc[0]
        table["x_smaller"] = base["size_mb"] / table["size_mb"]
        table["x_faster"] = base["latency_ms"] / table["latency_ms"]
        table["perplexity_change"] = table["perplexity"] - base["perplexity"]
    return table.set_index("technique")


def plot_size_vs_perplexity(table, path=None, *, anchor=None):
    """Scatter of size (MB) against perplexity (log scale), one labelled point per technique."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    finite = table[table["perplexity"].apply(math.isfinite)]
    ax.scatter(finite["size_mb"], finite["perplexity"])
    for technique, row in finite.iterrows():
        ax.annotate(technique, (row["size_mb"], row["perplexity"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    if anchor is not None:
        ax.axhline(anchor, linestyle=":", color="gray", label=f"published bert-base-uncased ~{anchor:g}")
        ax.legend()
    ax.set(xlabel="size as stored (MB)", ylabel="masked-LM perplexity (log scale)", yscale="log",
           title="Size vs perplexity (lower-left is better)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_latency(table, path=None):
    """Horizontal bars of median latency per technique, quartiles as error bars, device in the label."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.4 * len(table) + 1.5))
    labels = [f"{technique} [{row['device']}]" for technique, row in table.iterrows()]
    spread = [table["latency_ms"] - table["latency_q1_ms"], table["latency_q3_ms"] - table["latency_ms"]]
    ax.barh(labels, table["latency_ms"], xerr=spread, capsize=3)
    ax.invert_yaxis()
    ax.set(xlabel="median latency of one fixed batch (ms); bars: quartiles", title="Latency per technique")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def save_results(table, output_dir, stem="results"):
    """Write ``table`` as ``<stem>.csv`` and ``<stem>.json`` in ``output_dir``; return both paths.

    The JSON is strict (any JSON parser reads it): a list of row objects, NaN and infinities
    written as ``null``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = output_dir / f"{stem}.csv", output_dir / f"{stem}.json"
    table.to_csv(csv_path)
    records = [{key: _json_value(value) for key, value in record.items()}
               for record in table.reset_index().to_dict(orient="records")]
    json_path.write_text(json.dumps(records, indent=2, allow_nan=False))
    return csv_path, json_path


def _json_value(value):
    """A JSON-ready copy of one table cell: NaN/inf -> None, numpy scalars -> Python, rest -> str."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        value = value.item()  # numpy / torch scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ----------------------------------------------------------------------------------------------
# 5. Exercise 3 on wikitext in one call
# ----------------------------------------------------------------------------------------------

def make_mlm_batches(texts, tokenizer, *, num_batches, batch_size=16, seq_len=128, mask_fraction=0.15, seed=0):
    """``num_batches`` masked-LM training batches (dicts: input_ids, attention_mask, labels) from ``texts``.

    Windows are drawn in a seeded random order; when the text runs out, another pass starts with a
    fresh mask (seed + pass number), so short texts still give varied batches.
    """
    if num_batches < 1 or batch_size < 1:
        raise ValueError(f"need num_batches >= 1 and batch_size >= 1, got {num_batches}, {batch_size}")
    input_ids, attention_mask = windows_from_texts(texts, tokenizer, seq_len=seq_len)
    generator = torch.Generator().manual_seed(seed)
    needed, windows = num_batches * batch_size, []
    for pass_number in range(math.ceil(needed / len(input_ids))):
        masked, labels = mask_tokens(input_ids, attention_mask, special_ids=tokenizer.all_special_ids,
                                     mask_id=tokenizer.mask_token_id, mask_fraction=mask_fraction,
                                     seed=seed + pass_number)
        order = torch.randperm(len(input_ids), generator=generator)
        windows += [(masked[i], attention_mask[i], labels[i]) for i in order.tolist()]
    return [{"input_ids": torch.stack([w[0] for w in chunk]),
             "attention_mask": torch.stack([w[1] for w in chunk]),
             "labels": torch.stack([w[2] for w in chunk])}
            for chunk in (windows[start:start + batch_size] for start in range(0, needed, batch_size))]


def distill_bert_student(teacher, train_texts, tokenizer, *, num_layers=None, steps=200, epochs=2,
                         batch_size=16, seq_len=128, temperature=2.0, alpha=0.5, learning_rate=5e-5,
                         seed=0, progress=True):
    """Distil a BERT masked-LM teacher into a shallower student on ``train_texts`` (Exercise 3).

    The student comes from ``distillation.make_bert_student(teacher, num_layers)`` (DistilBERT's
    recipe: same width, every other layer copied); ``distillation.distill_model`` then trains it for
    ``epochs`` passes over ``steps // epochs`` masked-LM batches, on the teacher's device, on
    ``alpha * KD + (1 - alpha) * CE``. Train on wikitext's validation split and evaluate on its
    test split, never on the same tokens.

    **The control experiment:** ``alpha=0.0`` trains the same student (same initialisation from
    the teacher's layers) on the same batches, in the same order, for the same steps, with the same
    seed, on the labels alone: only the teacher's soft targets differ. Distillation has helped
    when the ``alpha > 0`` student beats this one.

    Returns:
        ``(student, epoch_losses)``, the student in eval mode.
    """
    from distillation import distill_model, make_bert_student  # your Exercise 3

    if steps < epochs or epochs < 1:
        raise ValueError(f"need epochs >= 1 and steps >= epochs, got steps={steps}, epochs={epochs}")
    set_seed(seed)
    batches = make_mlm_batches(train_texts, tokenizer, num_batches=steps // epochs, batch_size=batch_size,
                               seq_len=seq_len, seed=seed)
    device = model_device(teacher)
    student = make_bert_student(teacher, num_layers=num_layers).to(device)  # a copy: teacher unchanged
    student, epoch_losses = distill_model(teacher, student, batches, temperature, alpha, epochs, learning_rate,
                                          progress=progress, device=device)
    return student.eval(), epoch_losses
