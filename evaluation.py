"""Exercise 4 support: load BERT and wikitext, and measure size, perplexity and latency honestly.

Given code (not a student exercise): the notebook imports it so that every technique is measured
the same way. Read it top to bottom:

1. Loading: ``load_tokenizer``, ``load_bert``, ``resolve_model``, ``load_wikitext_texts``. The hub
   is the default (Colab); local paths work offline; with no hub and no path, a loud fallback to a
   seeded random BERT-tiny and a small text sample keeps every notebook cell running.
2. Perplexity: ``build_masked_eval_set`` fixes the masked inputs once (seeded, independent of any
   model or device); ``masked_lm_perplexity`` scores every model on exactly those tokens.
3. Latency: ``make_latency_batch`` + ``measure_latency`` (warm-up, median and quartiles of repeats).
4. Size: ``model_size_bytes`` (parameters + buffers as stored, bitsandbytes states included).
5. ``measure`` gives one table row; ``results_table``, the plots and ``save_results`` the summary.
6. ``distill_bert_student``: Exercise 3 on wikitext in one call.
"""
import contextlib
import json
import math
import os
import random
import re
import socket
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

PROJECT_ROOT = Path(__file__).resolve().parent
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
"""Offline assets (wikitext-2 raw, BERT uncased vocabulary) on the course machines; see README."""

BERT_TINY_SHAPE = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                       intermediate_size=512)
"""Google's BERT-tiny (google/bert_uncased_L-2_H-128_A-2) shape, used for offline runs and tests."""

DEFAULT_MODEL = "google-bert/bert-base-uncased"
WIKITEXT_HUB_ID = "Salesforce/wikitext"
"""The hub's ``wikitext`` dataset under its current, future-proof name (``wikitext`` is an alias)."""
SHARED_WIKITEXT_DIR = SHARED_DATA_DIR / "wikitext-2-raw-v1"
SHARED_VOCAB_FILE = SHARED_DATA_DIR / "bert-base-uncased-vocab" / "vocab.txt"
PUBLISHED_BERT_BASE_PERPLEXITY = 4.0
"""About 4: bert-base-uncased, 15% of wikitext-2 tokens masked (the anchor the notebook prints)."""

IGNORE_INDEX = -100
"""Label of every position that is not scored (PyTorch's and Hugging Face's convention)."""


def random_bert(seed=0, vocab_size=30522, **shape):
    """A seeded, randomly initialised ``BertForMaskedLM`` in eval mode.

    Args:
        seed: torch seed for the initialisation; the same seed gives the same weights.
        vocab_size: 30,522 for Google's uncased WordPiece vocabulary.
        **shape: ``BertConfig`` fields overriding ``BERT_TINY_SHAPE`` (e.g. ``num_hidden_layers=4``).
    """
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=vocab_size, **{**BERT_TINY_SHAPE, **shape})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Small utilities
# ----------------------------------------------------------------------------------------------

def set_seed(seed=0):
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def default_device():
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_device(model):
    """The device of the model's first parameter (or buffer); CPU for a model without tensors."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def announce(message):
    """Say something important loudly: a ``RuntimeWarning`` and a banner in the output."""
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    bar = "!" * 100
    print(f"\n{bar}\n!!! {message}\n{bar}\n", flush=True)


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
# 1. Loading: tokenizer, model, data (hub by default, local paths offline, loud fallback)
# ----------------------------------------------------------------------------------------------

def hub_reachable(timeout=3.0):
    """Whether the Hugging Face hub answers within ``timeout`` seconds (``HF_HUB_OFFLINE`` -> False).

    A quick TCP probe: without it, an unreachable hub costs ~25 s of retries per file.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _looks_like_local_path(name_or_path):
    text = str(name_or_path)
    return text.startswith((".", "/", "~")) or text.endswith((".txt", ".raw"))


def load_tokenizer(name_or_path=DEFAULT_MODEL):
    """A BERT WordPiece tokenizer from a hub id, a ``vocab.txt`` file, or a local folder.

    A folder with ``tokenizer.json``/``tokenizer_config.json`` loads with ``AutoTokenizer``; a
    ``vocab.txt`` file (or a folder holding only one) builds ``BertTokenizerFast(vocab=path)``,
    lower-casing as Google's uncased BERT does. (In transformers 5, ``vocab_file=`` silently maps
    every token to [UNK]; ``vocab=`` does not.)
    """
    from transformers import AutoTokenizer, BertTokenizerFast

    path = Path(name_or_path).expanduser()
    if path.is_dir() and ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        return AutoTokenizer.from_pretrained(str(path))
    if path.is_dir() and (path / "vocab.txt").is_file():
        path = path / "vocab.txt"
    if path.is_file():
        return BertTokenizerFast(vocab=str(path), do_lower_case=True)
    if path.exists() or _looks_like_local_path(name_or_path):
        raise FileNotFoundError(f"no tokenizer at {name_or_path!r}: give a hub id, a vocab.txt file, "
                                "or a folder with tokenizer.json, tokenizer_config.json or vocab.txt")
    return AutoTokenizer.from_pretrained(str(name_or_path))


def load_bert(name_or_path=DEFAULT_MODEL, *, quantization_config=None, dtype=None, device=None):
    """A ``BertForMaskedLM`` in eval mode, from a hub id or a ``save_pretrained`` folder.

    Args:
        quantization_config: e.g. ``BitsAndBytesConfig(load_in_8bit=True)``; the model is then
            quantized while loading, straight onto ``device`` (transformers 5 has no
            ``load_in_8bit=`` keyword: this is the way).
        dtype: ``torch.float16``/``torch.bfloat16`` to cast an unquantized model; None keeps fp32.
        device: where the model runs; default ``default_device()``.
    """
    from transformers import BertForMaskedLM

    device = torch.device(device or default_device())
    if quantization_config is not None:
        if dtype is not None:
            raise ValueError("give either quantization_config or dtype, not both")
        model = BertForMaskedLM.from_pretrained(str(name_or_path), quantization_config=quantization_config,
                                                device_map=str(device))
        return model.eval()
    model = BertForMaskedLM.from_pretrained(str(name_or_path))
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()


@dataclass
class ResolvedModel:
    """Where the notebook loads its BERT from, and whether it is the real thing."""

    path: str
    """Hub id or local folder: ``load_bert(path, ...)`` reloads it (bitsandbytes needs that)."""
    tokenizer: object
    is_random_fallback: bool
    """True: a seeded random BERT-tiny; the numbers measure mechanics, not quality."""


def resolve_model(name_or_path=DEFAULT_MODEL, *, offline=False, fallback_dir="outputs/offline-bert-tiny",
                  vocab_path=None):
    """Find the model and tokenizer: a local folder, the hub, or (loudly) a random BERT-tiny.

    Args:
        name_or_path: hub id (default Google's bert-base-uncased) or a ``save_pretrained`` folder.
        offline: never contact the hub (as with ``HF_HUB_OFFLINE=1``).
        fallback_dir: where the random BERT-tiny and its tokenizer are saved when needed.
        vocab_path: tokenizer for the fallback; default ``../shared`` uncased vocabulary when
            present, else a small vocabulary built from the built-in text sample.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return ResolvedModel(str(path), load_tokenizer(path), is_random_fallback=False)
    if _looks_like_local_path(name_or_path):
        raise FileNotFoundError(f"model folder {name_or_path!r} not found")
    if not offline and hub_reachable():
        return ResolvedModel(str(name_or_path), load_tokenizer(name_or_path), is_random_fallback=False)

    announce(f"The model hub is not reachable{' (offline run)' if offline else ''} and no local model "
             f"folder was given: falling back to a SEEDED RANDOM BERT of BERT-tiny shape instead of "
             f"{name_or_path}. Every cell still runs, but the numbers measure mechanics, not quality.")
    if vocab_path is not None:
        tokenizer = load_tokenizer(vocab_path)
    elif SHARED_VOCAB_FILE.is_file():
        tokenizer = load_tokenizer(SHARED_VOCAB_FILE)
    else:
        tokenizer = _builtin_sample_tokenizer()
    fallback_dir = Path(fallback_dir)
    random_bert(seed=0).save_pretrained(fallback_dir)
    tokenizer.save_pretrained(fallback_dir)
    return ResolvedModel(str(fallback_dir), tokenizer, is_random_fallback=True)


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


BUILTIN_TEXT_SAMPLE = """ = Model compression =

 Model compression makes a trained neural network smaller or faster while keeping most of its accuracy . The three classic families are quantization , pruning and knowledge distillation , and they are often combined .

 = = Quantization = =

 Quantization stores each weight with fewer bits . An eight @-@ bit integer takes one byte where a thirty @-@ two bit float takes four , so the model shrinks by a factor of about four . The scale that maps floats to integers is chosen per tensor , per row or per block of values . Large outliers in a few feature dimensions make a single scale imprecise , which is why mixed @-@ precision methods keep those dimensions in sixteen @-@ bit floats .

 = = Pruning = =

 Pruning removes weights that matter little . Unstructured pruning sets individual weights to zero and needs sparse storage or special hardware to save memory or time . Structured pruning removes whole neurons , attention heads or layers , so the remaining matrices are simply smaller and every device runs them faster .

 = = Distillation = =

 In knowledge distillation a small student network learns to imitate a large teacher . The student is trained on the teacher 's softened output distribution as well as on the true labels , and often keeps most of the teacher 's quality with half of its layers .

 = = Measuring = =

 A fair comparison uses the same evaluation tokens for every model , reports the device and the number format each model ran with , and repeats every timing several times after a warm @-@ up .
"""
"""Offline stand-in for wikitext (written for this lab, wikitext-style spacing): mechanics only."""


def _builtin_sample_tokenizer():
    """A tiny WordPiece tokenizer whose vocabulary covers ``BUILTIN_TEXT_SAMPLE`` (offline, no files)."""
    from transformers import BertTokenizerFast

    text = BUILTIN_TEXT_SAMPLE.lower()
    words = sorted(set(re.findall(r"\w+|[^\w\s]", text)))
    characters = sorted(set(text) - set(" \n"))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters,
              *(f"##{c}" for c in characters), *(w for w in words if w not in characters)]
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)


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


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure_latency(model, batch, *, warmup=3, repeats=10):
    """Time ``model(**batch)`` on the model's device: median and spread of ``repeats`` runs.

    The batch is copied to the device once, before any timing; ``warmup`` untimed runs come first
    (kernel selection, caches, lazy initialisation); on a GPU every run is bracketed by
    ``torch.cuda.synchronize()`` so the timer sees the finished work, not the kernel launch.

    Returns:
        dict: ``device``, ``latency_ms`` (median), ``latency_q1_ms``/``latency_q3_ms`` (quartiles),
        ``latency_min_ms``/``latency_max_ms``, ``tokens_per_s`` (real tokens / median time), and
        ``batch_shape``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    model.eval()
    device = model_device(model)
    batch = {name: tensor.to(device) for name, tensor in batch.items()}
    for _ in range(warmup):
        model(**batch)
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        model(**batch)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive") if repeats > 1 else times * 3
    num_tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
    return {"device": str(device), "latency_ms": 1e3 * median, "latency_q1_ms": 1e3 * q1,
            "latency_q3_ms": 1e3 * q3, "latency_min_ms": 1e3 * min(times), "latency_max_ms": 1e3 * max(times),
            "tokens_per_s": num_tokens / median, "batch_shape": tuple(batch["input_ids"].shape)}


# ----------------------------------------------------------------------------------------------
# 4. Size
# ----------------------------------------------------------------------------------------------

def _quantization_state_tensors(parameter):
    """Tensors bitsandbytes keeps beside a quantized weight: int8 row scales, 4-bit block state."""
    scb = getattr(parameter, "SCB", None)  # Int8Params: one float32 absmax per output row
    if isinstance(scb, torch.Tensor):
        yield scb
    state = getattr(parameter, "quant_state", None)  # Params4bit: absmax per block, code book
    while state is not None:  # double quantization nests a second state for the absmax values
        for name in ("absmax", "code", "offset"):
            tensor = getattr(state, name, None)
            if isinstance(tensor, torch.Tensor):
                yield tensor
        state = getattr(state, "state2", None)


def stored_tensors(model):
    """Every tensor the model stores, each once: parameters, buffers, bitsandbytes states.

    Tied weights (BERT's decoder shares the word embeddings) and aliases are counted once.
    """
    seen = set()
    for tensor in (*model.parameters(), *model.buffers(),
                   *(t for p in model.parameters() for t in _quantization_state_tensors(p))):
        key = (tensor.data_ptr(), tensor.nbytes, tensor.dtype)
        if tensor.nbytes and key not in seen:
            seen.add(key)
            yield tensor


def model_size_bytes(model):
    """Bytes of parameters + buffers as stored (int8 = 1 byte, packed 4-bit = 0.5 byte, plus scales)."""
    return sum(tensor.nbytes for tensor in stored_tensors(model))


def storage_dtypes(model):
    """The stored dtypes, largest share of bytes first, e.g. ``"int8 68% + float32 32%"``."""
    by_dtype = {}
    for tensor in stored_tensors(model):
        name = str(tensor.dtype).removeprefix("torch.")
        by_dtype[name] = by_dtype.get(name, 0) + tensor.nbytes
    total = sum(by_dtype.values())
    shares = [(name, nbytes / total) for name, nbytes in sorted(by_dtype.items(), key=lambda item: -item[1])
              if nbytes / total >= 0.005]  # position-id buffers and the like are left out
    if len(shares) == 1:
        return shares[0][0]
    return " + ".join(f"{name} {share:.0%}" for name, share in shares)


# ----------------------------------------------------------------------------------------------
# 5. One row per technique, the summary table, plots, files
# ----------------------------------------------------------------------------------------------

def measure(model, eval_set, latency_batch, name, *, batch_size=32, warmup=3, repeats=10, progress=True,
            **extra):
    """Measure one compressed model: one row of the summary table (a dict).

    Columns: ``technique`` (``name``), ``device``, ``dtype`` (as stored), ``params``, ``size_mb``
    (parameters + buffers as stored, 1 MB = 10^6 bytes), ``perplexity``, ``loss``,
    ``masked_tokens``, ``latency_ms`` with quartiles, ``tokens_per_s``, then ``extra`` columns
    (e.g. ``sparse_size_mb=`` for a pruned model). The model is measured where it is.
    """
    row = {"technique": name, "device": str(model_device(model)), "dtype": storage_dtypes(model),
           "params": sum(p.numel() for p in model.parameters()), "size_mb": model_size_bytes(model) / 1e6}
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
    """Write ``table`` as ``<stem>.csv`` and ``<stem>.json`` in ``output_dir``; return both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = output_dir / f"{stem}.csv", output_dir / f"{stem}.json"
    table.to_csv(csv_path)
    records = table.reset_index().to_dict(orient="records")
    json_path.write_text(json.dumps(records, indent=2, default=str, allow_nan=True))
    return csv_path, json_path


# ----------------------------------------------------------------------------------------------
# 6. Exercise 3 on wikitext in one call
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
    ``epochs`` passes over ``steps // epochs`` masked-LM batches, on the teacher's device. Train on
    wikitext's validation split and evaluate on its test split, never on the same tokens.

    Returns:
        ``(student, epoch_losses)``, the student in eval mode.
    """
    from distillation import distill_model, make_bert_student

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
