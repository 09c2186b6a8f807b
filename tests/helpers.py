"""Helpers shared by the tests: small seeded BERTs, their inputs and outputs, weight snapshots.

Graded tests import these (never the notebook's measuring code), so an exercise's score does not
depend on given code it does not use.
"""
import os
import re

import torch

from given.models import random_bert

UNFINISHED_RE = re.compile(r"^Exercise (?P<number>\d+(?:\.\d+)*): ")
"""The message of a stub's ``NotImplementedError``: ``Exercise 1.2: absmax int8 dequantization``."""

GRADER_SEED_VARIABLE = "GRADER_FRESH_SEED"
"""Set by ``tools/grade.py`` for every grading run to a seed drawn fresh for that run."""


def run_seed():
    """The seed every test's inputs are drawn from.

    0 when you run the tests yourself: the same inputs, and so the same result, every run. When
    ``tools/grade.py`` grades a submission it draws a fresh seed for each run
    (``GRADER_FRESH_SEED``, recorded in the report), so every graded point rests on inputs nobody
    has seen before: answers recorded from an earlier run earn nothing.
    """
    value = os.environ.get(GRADER_SEED_VARIABLE, "")
    return int(value) if value.isdigit() else 0

SMALL_VOCAB = 1000
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def small_bert(seed=None, vocab_size=SMALL_VOCAB, **shape):
    """A seeded random ``BertForMaskedLM`` of BERT-tiny's shape (``shape`` overrides it), in eval
    mode; ``seed`` defaults to the run's (``run_seed()``)."""
    return random_bert(seed=run_seed() if seed is None else seed, vocab_size=vocab_size, **shape)


def bert_inputs(vocab_size=SMALL_VOCAB, batch=2, length=11, padded_from=7):
    """``dict(input_ids, attention_mask)`` of int64 (batch, length); the last sequence is padded
    from position ``padded_from`` on."""
    input_ids = torch.randint(0, vocab_size, (batch, length))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, padded_from:] = 0
    return dict(input_ids=input_ids, attention_mask=attention_mask)


def bert_output(model, inputs):
    """The model's logits (``...ForMaskedLM``) or last hidden state (``BertModel``), without grad."""
    with torch.no_grad():
        output = model(**inputs)
    return output.logits if hasattr(output, "logits") else output.last_hidden_state


def state_copy(model):
    """A detached copy of every tensor of ``model.state_dict()``."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def changed_entries(model, before):
    """Names of the state entries of ``model`` that differ from the snapshot ``before``."""
    return [name for name, tensor in model.state_dict().items() if not torch.equal(tensor, before[name])]
