"""Exercise 4 support: load BERT and wikitext, and measure size, perplexity and latency honestly.

Given code (not a student exercise): the notebook imports it so that every technique is measured
the same way.
"""
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parent
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
"""Offline assets (wikitext-2 raw, BERT uncased vocabulary) on the course machines; see README."""

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

    config = BertConfig(vocab_size=vocab_size, **{**BERT_TINY_SHAPE, **shape})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    return model.eval()
