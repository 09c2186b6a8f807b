"""Loading BERT and its tokenizer (given code): which model a run uses, and saying so.

The lab's order (``choose_model``): the model you name; Google's BERT from the hub; the trained
offline model (``$LAB5_OFFLINE_MODEL`` or ``../shared/data/bert-mini-wikitext2``); last, loudly, a
seeded random BERT-tiny whose numbers measure mechanics, not quality.
"""
import json
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


OFFLINE_MODEL_ENV = "LAB5_OFFLINE_MODEL"
"""Environment variable naming the offline model's folder (set but empty: no offline model)."""
SHARED_OFFLINE_MODEL_DIR = SHARED_DATA_DIR / "bert-mini-wikitext2"
"""The trained offline stand-in for Google's BERT on the course machines (``../shared``)."""
MAKE_OFFLINE_MODEL = "python tools/make_offline_bert.py"
"""The command that builds an offline model on any machine with pip (no model hub needed)."""
RANDOM_MODEL_NAME = "RANDOM BERT-tiny (untrained)"
"""The ``model`` column of every number measured on the random fallback."""


@dataclass(frozen=True)
class ModelChoice:
    """Which BERT a run uses, and how to say so (``choose_model``; nothing loaded yet)."""

    source: str
    """"given" (the user named it), "hub" (Google's BERT), "offline" (the trained offline model)
    or "random" (the last resort: a seeded, untrained BERT-tiny)."""
    path: str
    """Hub id or local folder for ``load_bert``; None for "random" until ``resolve_model`` saves it."""
    name: str
    """Short name for the ``model`` column of the results (e.g. ``bert-mini-wikitext2``)."""
    description: str
    """One sentence for a person: what the model is and where it comes from."""

    @property
    def is_random_fallback(self):
        """True: a seeded random BERT-tiny; the numbers measure mechanics, not quality."""
        return self.source == "random"


@dataclass(frozen=True)
class ResolvedModel(ModelChoice):
    """A ``ModelChoice`` made loadable: ``load_bert(resolved.path)`` and its ``tokenizer``."""

    tokenizer: object


def offline_model_dir():
    """The trained offline model's folder, or None when there is none.

    ``$LAB5_OFFLINE_MODEL`` when set (an empty value means: no offline model), else
    ``../shared/data/bert-mini-wikitext2`` when that folder exists.

    Raises:
        FileNotFoundError: ``$LAB5_OFFLINE_MODEL`` names something that is not a folder.
    """
    if OFFLINE_MODEL_ENV in os.environ:
        value = os.environ[OFFLINE_MODEL_ENV].strip()
        if not value:
            return None
        path = Path(value).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{OFFLINE_MODEL_ENV}={value!r} is not a folder: point it at a "
                                    f"save_pretrained folder (build one with {MAKE_OFFLINE_MODEL}), "
                                    "or set it empty to use no offline model")
        return path.resolve()
    return SHARED_OFFLINE_MODEL_DIR if SHARED_OFFLINE_MODEL_DIR.is_dir() else None


def _shape_of(folder):
    """``"4 layers, hidden 384"`` from a model folder's config.json (empty when unreadable)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
        return f"{config['num_hidden_layers']} layers, hidden {config['hidden_size']}"
    except (OSError, ValueError, KeyError):
        return "shape unknown"


def choose_model(name_or_path=None, *, offline=False):
    """Which BERT to use, in the lab's order (quick: reads no weights).

    1. ``name_or_path`` when given: a ``save_pretrained`` folder, or a hub id (needs the hub).
    2. Google's ``bert-base-uncased`` from the hub, when reachable and not ``offline``.
    3. The trained offline model: ``$LAB5_OFFLINE_MODEL``, else ``../shared/data/bert-mini-wikitext2``.
    4. Last resort: a seeded random BERT-tiny (``source == "random"``).

    Args:
        name_or_path: None for the lab's default (steps 2 to 4); a folder or hub id to use that model.
        offline: never contact the hub (as with ``HF_HUB_OFFLINE=1``).

    Raises:
        FileNotFoundError: ``name_or_path`` looks like a path but is not a folder.
        ConnectionError: ``name_or_path`` is a hub id and the hub is not reachable (or ``offline``).
    """
    if name_or_path is not None:
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            return ModelChoice("given", str(path), path.resolve().name,
                               f"{path.resolve().name} ({_shape_of(path)}), the model you gave, at {path}")
        if _looks_like_local_path(name_or_path) or path.exists():
            raise FileNotFoundError(f"model folder {str(name_or_path)!r} not found: give a folder written "
                                    f"by save_pretrained, or a hub id such as {DEFAULT_MODEL!r}")
        if offline or not hub_reachable():
            raise ConnectionError(f"cannot load {name_or_path!r}: the model hub is "
                                  f"{'not used (offline run)' if offline else 'not reachable'}. Give a local "
                                  "folder instead, or no model at all to use the lab's offline model")
        return ModelChoice("given", str(name_or_path), str(name_or_path),
                           f"{name_or_path}, the model you gave, from the Hugging Face hub")
    if not offline and hub_reachable():
        return ModelChoice("hub", DEFAULT_MODEL, DEFAULT_MODEL,
                           f"Google's {DEFAULT_MODEL} from the Hugging Face hub")
    folder = offline_model_dir()
    if folder is not None:
        return ModelChoice("offline", str(folder), folder.name,
                           f"{folder.name} ({_shape_of(folder)}), the trained offline stand-in for "
                           f"Google's BERT (the hub is {'not used' if offline else 'not reachable'}), at {folder}")
    return ModelChoice("random", None, RANDOM_MODEL_NAME,
                       "a SEEDED RANDOM BERT of BERT-tiny shape, never trained: its numbers measure "
                       "mechanics, not quality")


def no_trained_model_message(offline=False):
    """What to say when only the random fallback is left: why, and how to get a trained model."""
    return (f"The model hub is {'not used (offline run)' if offline else 'not reachable'} and there is no "
            f"offline model (neither ${OFFLINE_MODEL_ENV} nor {SHARED_OFFLINE_MODEL_DIR}): falling back to "
            f"a SEEDED RANDOM BERT of BERT-tiny shape. Every cell still runs, but the numbers measure "
            f"mechanics, not quality.\n{HOW_TO_GET_A_TRAINED_MODEL}")


HOW_TO_GET_A_TRAINED_MODEL = (f"To measure a trained model offline, build the offline model:\n    {MAKE_OFFLINE_MODEL}\n"
                              f"then set {OFFLINE_MODEL_ENV} to its folder (or pass --model FOLDER).")


def resolve_model(name_or_path=None, *, offline=False, fallback_dir="outputs/offline-bert-tiny",
                  vocab_path=None):
    """Choose the model (``choose_model``), say which in one line, and load its tokenizer.

    The random fallback is announced loudly (a ``RuntimeWarning`` and a banner) and saved to
    ``fallback_dir`` with its tokenizer, so ``load_bert(resolved.path)`` works for every choice.

    Args:
        name_or_path, offline: see ``choose_model``. None is the lab's default.
        fallback_dir: where the random BERT-tiny and its tokenizer are saved when needed.
        vocab_path: tokenizer for the fallback; default ``../shared`` uncased vocabulary when
            present, else a small vocabulary built from the built-in text sample.
    """
    choice = choose_model(name_or_path, offline=offline)
    if not choice.is_random_fallback:
        print(f"Model: {choice.description}", flush=True)
        return ResolvedModel(**vars(choice), tokenizer=load_tokenizer(choice.path))

    announce(no_trained_model_message(offline))
    if vocab_path is not None:
        tokenizer = load_tokenizer(vocab_path)
    elif SHARED_VOCAB_FILE.is_file():
        tokenizer = load_tokenizer(SHARED_VOCAB_FILE)
    else:
        tokenizer = _builtin_sample_tokenizer()
    fallback_dir = Path(fallback_dir)
    random_bert(seed=0).save_pretrained(fallback_dir)
    tokenizer.save_pretrained(fallback_dir)
    return ResolvedModel(**{**vars(choice), "path": str(fallback_dir)}, tokenizer=tokenizer)


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
