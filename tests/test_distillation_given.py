"""Tests of the given (non-exercise) code in distillation.py: input checks and batch plumbing.

Not graded (no exercise marker): this code ships complete in the student release, so these tests
pass there too. Every check must fire before any training: the models are compared before and after.
"""
import copy

import pytest
import torch
from torch import nn

from distillation import (compute_distillation_loss, cross_entropy_loss, distill_model,
                          evenly_spaced_layers, make_bert_student, model_logits)


def logits(*shape):
    return torch.randn(*shape)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_loss_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        compute_distillation_loss(logits(2, 3), logits(2, 3), temperature)


@pytest.mark.parametrize("student, teacher, error, message", [
    (logits(2, 3), logits(2, 4), ValueError, "same shape"),
    (logits(3), logits(3), ValueError, r"\(N, C\) or \(B, L, C\)"),
    (torch.ones(2, 3, dtype=torch.long), logits(2, 3), TypeError, "floating-point"),
    ([[0.0, 1.0]], logits(1, 2), TypeError, "floating-point"),
])
def test_loss_rejects_bad_logits(student, teacher, error, message):
    with pytest.raises(error, match=message):
        compute_distillation_loss(student, teacher, 2.0)


@pytest.mark.parametrize("mask, error, message", [
    (torch.ones(2, 4, dtype=torch.bool), ValueError, r"shape \(2, 4\).*\(2, 3\)"),
    (torch.ones(2, 3, 5, dtype=torch.bool), ValueError, "shape"),
    (torch.ones(2, 3, dtype=torch.long), TypeError, "bool"),
    (torch.zeros(2, 3, dtype=torch.bool), ValueError, "selects no position"),
])
def test_loss_rejects_bad_mask(mask, error, message):
    with pytest.raises(error, match=message):
        compute_distillation_loss(logits(2, 3, 5), logits(2, 3, 5), 2.0, mask=mask)


def test_cross_entropy_without_labels_is_zero_not_nan():
    scores = logits(2, 3, 5).requires_grad_()
    loss = cross_entropy_loss(scores, torch.full((2, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(scores.grad == 0)


class _NoLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x):
        return {"scores": self.linear(x)}


def test_model_logits_reads_hugging_face_outputs_and_plain_tensors():
    class WithLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, input_ids):
            return type("Output", (), {"logits": self.linear(input_ids)})()

    model, x = WithLogits(), torch.randn(4, 3)
    assert torch.equal(model_logits(model, {"input_ids": x}), model.linear(x))
    assert torch.equal(model_logits(model.linear, x), model.linear(x))
    with pytest.raises(TypeError, match="logits"):
        model_logits(_NoLogits(), x)


def _setup(num_classes_student=4):
    teacher = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    student = nn.Sequential(nn.Linear(8, num_classes_student))
    batches = [(torch.randn(8, 8), torch.randint(0, 4, (8,))) for _ in range(2)]
    return teacher, student, batches


GOOD = dict(temperature=2.0, alpha=0.5, num_epochs=1, learning_rate=1e-2)


@pytest.mark.parametrize("override, message", [
    (dict(alpha=-0.1), "alpha"), (dict(alpha=1.5), "alpha"), (dict(alpha=float("nan")), "alpha"),
    (dict(temperature=0.0), "temperature"), (dict(temperature=-2.0), "temperature"),
    (dict(num_epochs=0), "num_epochs"), (dict(num_epochs=1.5), "num_epochs"),
    (dict(learning_rate=0.0), "learning_rate"), (dict(learning_rate=-1e-3), "learning_rate"),
])
def test_distill_model_rejects_bad_hyperparameters_before_training(override, message):
    teacher, student, batches = _setup()
    teacher_before, student_before = copy.deepcopy(teacher.state_dict()), copy.deepcopy(student.state_dict())
    with pytest.raises(ValueError, match=message):
        distill_model(teacher, student, batches, **{**GOOD, **override}, progress=False)
    _assert_untouched(teacher, teacher_before, student, student_before)
    assert teacher.training, "the teacher's training flag must be left as it was"


@pytest.mark.parametrize("case, error, message", [
    ("empty", ValueError, "empty"),
    ("generator", TypeError, "one-shot"),
    ("output size", ValueError, "teacher.*student"),
    ("labels shape", ValueError, "labels"),
    ("batch form", TypeError, "pair of tensors"),
    ("dict without labels", ValueError, "labels"),
])
def test_distill_model_rejects_bad_data_before_training(case, error, message):
    teacher, student, batches = _setup(num_classes_student=5 if case == "output size" else 4)
    data = {
        "empty": [],
        "generator": (batch for batch in batches),
        "output size": batches,
        "labels shape": [(x, y[:4]) for x, y in batches],
        "batch form": [x for x, _ in batches],
        "dict without labels": [{"input_ids": x} for x, _ in batches],
    }[case]
    teacher_before, student_before = copy.deepcopy(teacher.state_dict()), copy.deepcopy(student.state_dict())
    with pytest.raises(error, match=message):
        distill_model(teacher, student, data, **GOOD, progress=False)
    _assert_untouched(teacher, teacher_before, student, student_before)


def test_distill_model_rejects_non_modules():
    _, student, batches = _setup()
    with pytest.raises(TypeError, match="teacher_model"):
        distill_model(lambda x: x, student, batches, **GOOD, progress=False)


def _assert_untouched(teacher, teacher_before, student, student_before):
    for model, before in ((teacher, teacher_before), (student, student_before)):
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, before[name]), f"{name} changed although the call was rejected"


@pytest.mark.parametrize("teacher_layers, student_layers", [(4, 5), (4, 0), (0, 0), (4, 2.0), (4, True)])
def test_evenly_spaced_layers_rejects_bad_counts(teacher_layers, student_layers):
    with pytest.raises(ValueError, match="layers"):
        evenly_spaced_layers(teacher_layers, student_layers)


def test_make_bert_student_rejects_bad_input():
    from evaluation import random_bert
    teacher = random_bert(seed=0, vocab_size=100)
    with pytest.raises(ValueError, match="more layers"):
        make_bert_student(teacher, num_layers=3)
    with pytest.raises(ValueError, match="num_student_layers"):
        make_bert_student(teacher, num_layers=0)
    with pytest.raises(TypeError, match="BertForMaskedLM"):
        make_bert_student(nn.Linear(2, 2))
