"""Loading BERT and its tokenizer: the hub by default, local folders offline, a loud fallback (given code)."""
import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from given.checks import check_known_keywords
from given.manifest import SHARED_DATA_DIR
from given.torch_utils import default_device

DEFAULT_MODEL = "google-bert/bert-base-uncased"
SHARED_VOCAB_FILE = SHARED_DATA_DIR / "bert-base-uncased-vocab" / "vocab.txt"

BERT_TINY_SHAPE = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                       intermediate_size=512)
"""Google's BERT-tiny (google/bert_uncased_L-2_H-128_A-2) shape, used for offline runs and tests."""


def random_bert(seed=0, vocab_size=30522, **shape):
    """A seeded, randomly initialised ``BertForMaskedLM`` in eval mode.

    Args:
        seed: torch seed for the initialisation; the same seed gives the same weights.
        vocab_size: 30,522 for Google's uncased WordPiece vocabulary.
        **shape: ``BertConfig`` fields overriding ``BERT_TINY_SHAPE`` (e.g. ``num_hidden_layers=4``).
    """
    from transformers import BertConfig, BertForMaskedLM

    check_known_keywords(shape, BertConfig().to_dict(), "BertConfig fields", examples=BERT_TINY_SHAPE)
    config = BertConfig(vocab_size=vocab_size, **{**BERT_TINY_SHAPE, **shape})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    return model.eval()


_ANNOUNCED = set()


def announce(message):
    """Say something important loudly, once per process: a ``RuntimeWarning`` and a banner in the
    output (the notebook silences the warning: ``given/quiet.py``)."""
    if message in _ANNOUNCED:
        return
    _ANNOUNCED.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    bar = "!" * 100
    print(f"\n{bar}\n!!! {message}\n{bar}\n", flush=True)


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

    if _looks_like_local_path(name_or_path) and not Path(name_or_path).expanduser().is_dir():
        raise FileNotFoundError(f"model folder {str(name_or_path)!r} does not exist (a local path must be "
                                "a folder written by save_pretrained; a hub id looks like "
                                "'google-bert/bert-base-uncased')")
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
