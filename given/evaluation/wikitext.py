"""WikiText-2 and the fixed masked evaluation set (given code): the text every model is scored on.

1. ``load_wikitext_texts``: the hub by default, a local folder offline (``../shared`` when there),
   a loud fallback to a small built-in sample.
2. ``build_masked_eval_set``: the rows joined and tokenized once (``tokenize_stream``), cut into
   ``[CLS] ... [SEP]`` windows (``chunk_into_windows``), a seeded fraction of their tokens masked
   (``mask_tokens``), independent of any model or device: a ``MaskedEvalSet``.

Runs no student code.
"""
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from given.manifest import SHARED_WIKITEXT_DIR
from given.models import BUILTIN_TEXT_SAMPLE, announce, hub_reachable
from given.torch_utils import IGNORE_INDEX

WIKITEXT_HUB_ID = "Salesforce/wikitext"
"""The hub's ``wikitext`` dataset under its current, future-proof name (``wikitext`` is an alias)."""


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
