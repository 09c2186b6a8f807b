"""Tests of given code: the argument checks, the int8 and fp16 products, sizes, the training
loop's plumbing, the bad-input errors of the given modules. Never graded (marker ``given_code``).

They pass in the student release as it is: every check runs before the exercise it guards, so
each of these tests names the error a bad input gets, whether or not the exercise is written.
"""
import math
import re

import pytest
import torch
from torch import nn

from distillation import (compute_distillation_loss, cross_entropy_loss, distill_model,
                          evenly_spaced_layers, make_bert_student)
from given.distill_loop import model_logits
from given.matmul import fp16_matmul, int32_to_float32_in_place, int8_matmul_int32
from quantization import QuantizedVector
from helpers import changed_entries, small_bert, state_copy
from quantization import mixed_precision_forward
from test_distillation import NUM_CLASSES, NUM_FEATURES, make_batches, make_student, make_teacher, random_logits

pytestmark = pytest.mark.given_code


# ---------------------------------------------------------------------------------------------
# Exercise 1's given code: QuantizedVector's checks, memory_bytes, the int8 and fp16 products
# ---------------------------------------------------------------------------------------------

def stored_as(quantization_format, quantized, alpha):
    """A ``QuantizedVector`` holding the given values, built without quantizing (no exercise code)."""
    vector = QuantizedVector.__new__(QuantizedVector)
    vector.quantization_format, vector.quantized_vector, vector.alpha = quantization_format, quantized, alpha
    return vector


def test_memory_bytes_per_format():
    values, scale = torch.zeros(100, dtype=torch.int8), torch.ones(())
    assert stored_as("int8", values, scale).memory_bytes() == 100 + 4
    assert stored_as("fp16", values.half(), None).memory_bytes() == 200
    assert stored_as("1bit", values, scale).memory_bytes() == 13 + 4  # ceil(100 / 8) + scale
    assert stored_as("1.58bit", values, scale).memory_bytes() == 20 + 4  # ceil(100 / 5): 5 ternary values a byte
    assert stored_as("int8", values.reshape(10, 10), torch.ones(10, 1)).memory_bytes() == 100 + 10 * 4


@pytest.mark.parametrize("bad, error, words", [
    (torch.tensor([1, 2, 3]), TypeError, "floating-point"),
    ([1.0, 2.0], TypeError, "torch.Tensor"),
    (torch.tensor([]), ValueError, "empty"),
    (torch.tensor([1.0, float("nan")]), ValueError, "NaN"),
    (torch.tensor([1.0, float("inf")]), ValueError, "inf"),
])
def test_bad_vectors_are_rejected_clearly(bad, error, words):
    with pytest.raises(error, match=words):
        QuantizedVector(bad, "int8")


def test_unknown_format_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"int8.*fp16.*1bit.*1\.58bit"):
        QuantizedVector(torch.ones(3), "int4")


def test_bad_dim_and_fp16_overflow_are_rejected():
    with pytest.raises(ValueError, match="dim"):
        QuantizedVector(torch.ones(3, 3), "int8", dim=2)
    with pytest.raises(ValueError, match="65504"):
        QuantizedVector(torch.tensor([1e5]), "fp16")


def test_int8_matmul_accumulates_in_int32_without_wrap_around():
    """Given helper (worth no points): int8 x int8 must not wrap around in int8."""
    a = torch.full((2, 64), 127, dtype=torch.int8)
    b = torch.full((64, 3), -127, dtype=torch.int8)
    result = int8_matmul_int32(a, b)
    assert result.dtype == torch.int32
    assert torch.equal(result, torch.full((2, 3), -127 * 127 * 64, dtype=torch.int32))


def test_int8_matmul_fallback_is_exact(monkeypatch):
    """Given helper: without torch._int_mm (old torch, odd CUDA shapes) the float64 path is used."""
    import given.matmul
    monkeypatch.setattr(given.matmul, "_int_mm_supported", lambda a, b: False)
    a = torch.randint(-127, 128, (5, 300), dtype=torch.int8)
    b = torch.randint(-127, 128, (300, 7), dtype=torch.int8)
    expected = a.to(torch.int64) @ b.to(torch.int64)
    result = int8_matmul_int32(a, b)
    assert result.dtype == torch.int32 and torch.equal(result.to(torch.int64), expected)


def test_the_int8_speed_check_times_a_product_large_enough_to_show_the_kernel(monkeypatch):
    """Given helper: whether int8 products use ``torch._int_mm`` on a CPU is decided by timing it once
    against float32. At a small shape the per-call costs decide instead of the kernel (an AMX Xeon
    measured under the 2x bar at 128x512 @ 512x256, and then multiplied in float32, 5x slower)."""
    import given.matmul
    products = []
    real_int_mm = torch._int_mm

    def spy(a, b):
        products.append((tuple(a.shape), tuple(b.shape), b.stride(0) == 1))
        return real_int_mm(a, b)

    monkeypatch.setattr(torch, "_int_mm", spy)
    ratio = given.matmul.int_mm_speed_vs_float32.__wrapped__()  # measured afresh, not the cached one
    assert ratio > 0 and products, "the check times torch._int_mm"
    assert all(k == k_b and column_major for (_, k), (k_b, _), column_major in products), (
        "the layout int8_matmul_int32 hands to torch._int_mm")
    (m, k), (_, n), _ = products[-1]  # the product the answer comes from
    if ratio >= 1.0:  # only a plain loop, slower than float32 on the quick product, may stop there
        assert m >= 256 and k >= 768 and n >= 768, (
            f"decided on a {m}x{k} @ {k}x{n} product, which measures the call more than the kernel")


def test_a_plain_loop_is_found_on_the_quick_product_without_running_the_large_one(monkeypatch):
    """Given helper: on an AVX2-only CPU ``torch._int_mm`` is a plain loop, ~50x slower than float32;
    the speed check says so from the small product and never runs the large one (~1 s of loop)."""
    import time

    import given.matmul
    shapes = []
    real_int_mm = torch._int_mm

    def plain_loop(a, b):
        shapes.append(tuple(a.shape))
        time.sleep(0.02)  # far slower than a float32 product of the same size
        return real_int_mm(a, b)

    monkeypatch.setattr(torch, "_int_mm", plain_loop)
    ratio = given.matmul.int_mm_speed_vs_float32.__wrapped__()
    assert ratio < 1.0
    assert set(shapes) == {given.matmul.QUICK_CHECK_SHAPE[:2]}, f"timed products of shapes {set(shapes)}"


def test_int32_to_float32_in_place_gives_the_values_of_to_float32_in_the_same_memory():
    """Given helper: the values of ``.to(torch.float32)``, extremes and values above 2^24 included,
    written over the int32 buffer; a non-contiguous view or another dtype is converted into a new
    tensor and left as it was."""
    extremes = torch.tensor([0, 1, -1, 2 ** 24 + 1, -(2 ** 24) - 3, 2 ** 31 - 1, -(2 ** 31)], dtype=torch.int32)
    for values in (extremes, torch.randint(-2 ** 31, 2 ** 31 - 1, (64, 96), dtype=torch.int32), extremes[:1]):
        expected = values.to(torch.float32)
        buffer = values.clone()
        result = int32_to_float32_in_place(buffer)
        assert result.dtype == torch.float32 and result.shape == values.shape
        assert torch.equal(result, expected)
        assert result.data_ptr() == buffer.data_ptr(), "converted in the int32 buffer's own memory"
    columns = torch.arange(12, dtype=torch.int32).reshape(3, 4).T  # not contiguous
    result = int32_to_float32_in_place(columns)
    assert torch.equal(result, columns.to(torch.float32)) and columns.dtype == torch.int32
    assert torch.equal(columns, torch.arange(12, dtype=torch.int32).reshape(3, 4).T), "the view is unchanged"
    int64 = torch.tensor([2 ** 40, -5])
    assert torch.equal(int32_to_float32_in_place(int64), int64.to(torch.float32)) and int64.dtype == torch.int64


def test_mixed_precision_rejects_bad_input():
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    with pytest.raises(ValueError, match="weight.T"):
        mixed_precision_forward(x, torch.randn(3, 8))
    with pytest.raises(TypeError, match="floating-point"):
        mixed_precision_forward(x.to(torch.int32), w)
    with pytest.raises(ValueError, match="threshold"):
        mixed_precision_forward(x, w, threshold=-1.0)
    x[0, 0] = 1e6  # an outlier beyond fp16's range would silently become inf
    with pytest.raises(ValueError, match="65504"):
        fp16_matmul(x[:, :1], w[:1])


# ---------------------------------------------------------------------------------------------
# Exercise 3's given code: the checks of the loss and of the training loop
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_loss_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        compute_distillation_loss(random_logits(2, 3), random_logits(2, 3), temperature)


@pytest.mark.parametrize("student, teacher, error, message", [
    (random_logits(2, 3), random_logits(2, 4), ValueError, "same shape"),
    (random_logits(3), random_logits(3), ValueError, r"\(N, C\) or \(B, L, C\)"),
    (torch.ones(2, 3, dtype=torch.long), random_logits(2, 3), TypeError, "floating-point"),
    ([[0.0, 1.0]], random_logits(1, 2), TypeError, "floating-point"),
])
def test_loss_rejects_bad_random_logits(student, teacher, error, message):
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
        compute_distillation_loss(random_logits(2, 3, 5), random_logits(2, 3, 5), 2.0, mask=mask)


def test_cross_entropy_without_labels_is_zero_not_nan():
    scores = random_logits(2, 3, 5).requires_grad_()
    loss = cross_entropy_loss(scores, torch.full((2, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(scores.grad == 0)


GOOD = dict(temperature=2.0, alpha=0.5, num_epochs=1, learning_rate=1e-2)


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


@pytest.mark.parametrize("override, message", [
    (dict(alpha=-0.1), "alpha"), (dict(alpha=1.5), "alpha"), (dict(alpha=float("nan")), "alpha"),
    (dict(temperature=0.0), "temperature"), (dict(temperature=-2.0), "temperature"),
    (dict(num_epochs=0), "num_epochs"), (dict(num_epochs=1.5), "num_epochs"),
    (dict(learning_rate=0.0), "learning_rate"), (dict(learning_rate=-1e-3), "learning_rate"),
])
def test_distill_model_rejects_bad_hyperparameters_before_training(override, message):
    teacher, student, batches = make_teacher(), make_student(), make_batches(num_batches=2)
    teacher_before, student_before = state_copy(teacher), state_copy(student)
    with pytest.raises(ValueError, match=message):
        distill_model(teacher, student, batches, **{**GOOD, **override}, progress=False)
    assert not changed_entries(teacher, teacher_before) and not changed_entries(student, student_before)
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
    teacher, student, batches = make_teacher(), make_student(), make_batches(num_batches=2)
    if case == "output size":
        student = nn.Linear(NUM_FEATURES, NUM_CLASSES + 1)
    data = {
        "empty": [],
        "generator": (batch for batch in batches),
        "output size": batches,
        "labels shape": [(x, y[:4]) for x, y in batches],
        "batch form": [x for x, _ in batches],
        "dict without labels": [{"input_ids": x} for x, _ in batches],
    }[case]
    teacher_before, student_before = state_copy(teacher), state_copy(student)
    with pytest.raises(error, match=message):
        distill_model(teacher, student, data, **GOOD, progress=False)
    assert not changed_entries(teacher, teacher_before) and not changed_entries(student, student_before)


def test_distill_model_rejects_non_modules():
    student, batches = make_student(), make_batches(num_batches=2)
    with pytest.raises(TypeError, match="teacher_model"):
        distill_model(lambda x: x, student, batches, **GOOD, progress=False)


@pytest.mark.parametrize("teacher_layers, student_layers", [(4, 5), (4, 0), (0, 0), (4, 2.0), (4, True)])
def test_evenly_spaced_layers_rejects_bad_counts(teacher_layers, student_layers):
    with pytest.raises(ValueError, match="layers"):
        evenly_spaced_layers(teacher_layers, student_layers)


def test_make_bert_student_rejects_bad_input():
    teacher = small_bert(seed=0, vocab_size=100)
    with pytest.raises(ValueError, match="more layers"):
        make_bert_student(teacher, num_layers=3)
    with pytest.raises(ValueError, match="num_student_layers"):
        make_bert_student(teacher, num_layers=0)
    with pytest.raises(TypeError, match="BertForMaskedLM"):
        make_bert_student(nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------
# Bad input, a clear error, nothing silent: one test per case of the review, naming the error
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("student, teacher, error, message", [
    (torch.empty(0, 4), torch.empty(0, 4), ValueError, "empty"),
    (torch.tensor([[0.0, math.nan]]), torch.zeros(1, 2), ValueError, "student_logits contains 1 NaN"),
    (torch.tensor([[0.0, math.inf]]), torch.zeros(1, 2), ValueError, "student_logits contains 0 NaN and 1 inf"),
    (torch.zeros(1, 2), torch.tensor([[0.0, math.nan]]), ValueError, "teacher_logits contain 1 NaN"),
    (torch.zeros(1, 2), torch.tensor([[0.0, math.inf]]), ValueError, r"1 \+inf"),
    (torch.zeros(2, 2), torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]), ValueError, "every class is -inf"),
])
def test_loss_rejects_nan_inf_and_empty_logits(student, teacher, error, message):
    with pytest.raises(error, match=message):
        compute_distillation_loss(student, teacher, 2.0)


def test_loss_accepts_minus_inf_teacher_logits():
    """-inf in the teacher is a class it rules out: allowed by the check (the loss itself is 3.1)."""
    from given.checks import check_distillation_inputs
    check_distillation_inputs(torch.zeros(1, 3), torch.tensor([[0.0, -math.inf, 1.0]]), 2.0, None)


@pytest.mark.parametrize("alpha", [1.5, -0.5, math.nan])
def test_distillation_step_rejects_bad_alpha(alpha):
    from distillation import distillation_step
    teacher, student = make_teacher().eval(), make_student()
    before = state_copy(student)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    inputs, labels = make_batches(num_batches=1)[0]
    with pytest.raises(ValueError, match="alpha .* must be in \\[0, 1\\]"):
        distillation_step(teacher, student, inputs, labels, None, optimizer, 2.0, alpha)
    assert not changed_entries(student, before), "a rejected step must not train"


def test_distillation_step_rejects_bad_temperature():
    from distillation import distillation_step
    teacher, student = make_teacher().eval(), make_student()
    inputs, labels = make_batches(num_batches=1)[0]
    with pytest.raises(ValueError, match="temperature"):
        distillation_step(teacher, student, inputs, labels, None,
                          torch.optim.SGD(student.parameters(), lr=0.1), 0.0, 0.5)


@pytest.mark.parametrize("where", [0, 1])
def test_distill_model_says_the_input_data_is_bad(where):
    teacher, student, batches = make_teacher(), make_student(), make_batches(num_batches=2)
    batches[where][0][0, 0] = math.nan
    with pytest.raises(ValueError, match="1 NaN and 0 inf values: the training data is bad"):
        distill_model(teacher, student, batches, **GOOD, progress=False)


def test_distill_model_refuses_a_student_that_is_or_shares_the_teacher():
    teacher, batches = make_teacher(), make_batches(num_batches=2)
    with pytest.raises(ValueError, match="is the teacher_model itself"):
        distill_model(teacher, teacher, batches, **GOOD, progress=False)
    sharing = nn.Sequential(teacher[0], nn.ReLU(), nn.Linear(32, NUM_CLASSES))
    before = state_copy(teacher)
    with pytest.raises(ValueError, match="shares .* parameter"):
        distill_model(teacher, sharing, batches, **GOOD, progress=False)
    assert not changed_entries(teacher, before)


def test_quantized_vector_refuses_float64_beyond_float32():
    with pytest.raises(ValueError, match=r"vector \(as float32\) contains 0 NaN and 1 inf"):
        QuantizedVector(torch.tensor([1.0, 1e300], dtype=torch.float64), "int8")


@pytest.mark.parametrize("bad, error, message", [
    (torch.tensor([1.0, math.nan]), ValueError, "1 NaN"),
    (torch.tensor([1.0, -math.inf]), ValueError, "1 inf"),
    (torch.tensor([]), ValueError, "empty"),
    (torch.tensor([1e5]), ValueError, "65504"),
])
def test_fp16_quantize_refuses_nan_inf_empty_and_overflow(bad, error, message):
    from quantization import fp16_quantize
    with pytest.raises(error, match=message):
        fp16_quantize(bad)


def test_quantize_model_skip_takes_one_name_and_refuses_unknown_names():
    from given.quantized_linear import QuantizedLinear, _skip_names, quantize_model
    bert = small_bert(seed=0, vocab_size=100)
    assert _skip_names(bert, "cls") == ("cls",), "a string is one name, not its characters"
    with pytest.raises(ValueError, match=r"skip names \['clss'\] match no module"):
        quantize_model(bert, "int8", skip="clss")
    with pytest.raises(ValueError, match="threshold"):
        QuantizedLinear(nn.Linear(4, 2), "int8", threshold=-1.0)
    with pytest.raises(ValueError, match="unknown quantization_format 'int4'"):
        QuantizedLinear(nn.Linear(4, 2), "int4")


@pytest.mark.parametrize("keep, error, message", [
    (torch.tensor([True, False, True]), TypeError, "not a bool mask"),
    (torch.tensor([0.0, 2.0]), TypeError, "integer tensor"),
    (torch.tensor([2, 0]), ValueError, "strictly increasing"),
    (torch.tensor([0, 0, 2]), ValueError, "strictly increasing"),
    (torch.tensor([], dtype=torch.long), ValueError, "empty"),
    (torch.tensor([0, 3]), ValueError, r"in \[0, 3\)"),
    (torch.tensor([-1, 0]), ValueError, r"in \[0, 3\)"),
    ([0.5, 1], TypeError, "list of ints"),
])
def test_shrink_linear_refuses_bad_indices(keep, error, message):
    from pruning import shrink_linear
    linear = nn.Linear(4, 3)
    weight = linear.weight.detach().clone()
    with pytest.raises(error, match=message):
        shrink_linear(linear, keep, dim=0)
    assert torch.equal(linear.weight, weight), "a refused cut leaves the layer as it was"


def test_shrink_linear_refuses_other_modules_and_dims():
    from pruning import shrink_linear
    with pytest.raises(TypeError, match="must be an nn.Linear, got Conv1d"):
        shrink_linear(nn.Conv1d(2, 2, 1), torch.tensor([0]), dim=0)
    with pytest.raises(ValueError, match="dim must be 0"):
        shrink_linear(nn.Linear(2, 2), torch.tensor([0]), dim=2)


@pytest.mark.parametrize("heads, error, message", [
    ([0.7], TypeError, "head positions"),
    ([2], ValueError, r"distinct positions in \[0, 2\)"),
    ([0, 1], ValueError, "leaving at least one head"),
    ([0, 0], ValueError, "distinct"),
])
def test_remove_attention_heads_refuses_bad_heads(heads, error, message):
    from pruning import remove_attention_heads
    attention = small_bert(seed=0, vocab_size=100).bert.encoder.layer[0].attention
    with pytest.raises(error, match=message):
        remove_attention_heads(attention, heads)


def test_bert_surgery_refuses_bad_counts_and_models():
    from given.bert_surgery import lowest_indices, prune_bert_ffn_neurons, prune_bert_heads
    with pytest.raises(ValueError, match=r"count must be an integer in \[0, 3\], got -1"):
        lowest_indices(torch.tensor([3.0, 1.0, 2.0]), -1)
    for prune in (prune_bert_heads, prune_bert_ffn_neurons):
        with pytest.raises(TypeError, match="expected a Hugging Face BertModel or BertFor... model, got Linear"):
            prune(nn.Linear(4, 4), 0.5)


def test_apply_weight_pruning_refuses_modules_without_weights():
    from pruning import apply_weight_pruning
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(TypeError, match="has no weight tensor"):
        apply_weight_pruning(model, nn.ReLU, 0.5)


def test_loading_says_what_is_wrong(tmp_path):
    from given.models import load_bert, random_bert
    with pytest.raises(FileNotFoundError, match="'./nope' does not exist"):
        load_bert("./nope")
    with pytest.raises(TypeError, match=r"unknown BertConfig fields \['layers'\]"):
        random_bert(layers=3)


def test_evaluation_refuses_a_zero_batch_size_and_endless_batches():
    import given.evaluation as ev
    from given.models import _builtin_sample_tokenizer
    tokenizer = _builtin_sample_tokenizer()
    eval_set = ev.build_masked_eval_set(["a sample of text about model compression ."] * 4, tokenizer,
                                        seq_len=16, seed=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        ev.masked_lm_perplexity(small_bert(seed=0, vocab_size=tokenizer.vocab_size), eval_set, batch_size=0)
    with pytest.raises(ValueError, match="passes over a text of only"):
        ev.make_mlm_batches(["a short text ."], tokenizer, num_batches=10**6)


# ---------------------------------------------------------------------------------------------
# Exercises 1.9, 1.10 and 2.7: the argument checks, and pruning_masks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("v, bits, group_size, error, message", [
    (torch.randn(4, 100), 4, 128, ValueError, "not a multiple of group_size=128"),
    (torch.randn(4, 96), 4, 64, ValueError, "group sizes that fit: [32, 96]"),
    (torch.randn(4, 64), 1, 32, ValueError, "from 2 to 8"),
    (torch.randn(4, 64), 9, 32, ValueError, "from 2 to 8"),
    (torch.randn(4, 64), 4.0, 32, ValueError, "from 2 to 8"),
    (torch.randn(4, 64), 4, 0, ValueError, "group_size must be an integer >= 1"),
    (torch.randn(64), 4, 32, ValueError, "2-D (n, k)"),
    (torch.full((2, 4), math.nan), 4, 2, ValueError, "NaN"),
    (torch.ones(2, 4, dtype=torch.int32), 4, 2, TypeError, "floating-point"),
])
def test_groupwise_quantize_rejects_bad_arguments(v, bits, group_size, error, message):
    from quantization import groupwise_quantize
    with pytest.raises(error, match=re.escape(message)):
        groupwise_quantize(v, bits=bits, group_size=group_size)


@pytest.mark.parametrize("q, alpha, error, message", [
    (torch.zeros(2, 8), torch.ones(2, 2), TypeError, "q must be a 2-D int8"),
    (torch.zeros(2, 8, dtype=torch.int8), torch.ones(3, 2), ValueError, "do not match"),
    (torch.zeros(2, 8, dtype=torch.int8), torch.ones(2, 3), ValueError, "do not match"),
    (torch.zeros(2, 8, dtype=torch.int8), torch.ones(2), TypeError, "alpha must be a 2-D float"),
])
def test_groupwise_dequantize_rejects_mismatched_scales(q, alpha, error, message):
    from quantization import groupwise_dequantize
    with pytest.raises(error, match=re.escape(message)):
        groupwise_dequantize(q, alpha)


@pytest.mark.parametrize("v, bits, iterations, message", [
    (torch.randn(10), 0, 20, "from 1 to 8"),
    (torch.randn(10), 9, 20, "uint8 indices"),
    (torch.randn(10), 4, -1, "iterations must be an integer >= 0"),
    (torch.randn(10), 4, 2.5, "iterations must be an integer >= 0"),
    (torch.empty(0), 4, 20, "empty"),
])
def test_kmeans_quantize_rejects_bad_arguments(v, bits, iterations, message):
    from quantization import kmeans_quantize
    with pytest.raises(ValueError, match=re.escape(message)):
        kmeans_quantize(v, bits=bits, iterations=iterations)


def test_pruning_masks_names_the_zeroed_weights_once():
    from given.pruning_tools import pruning_masks
    model = small_bert()
    query = model.bert.encoder.layer[0].attention.self.query
    with torch.no_grad():
        query.weight[:, :5] = 0
        model.bert.embeddings.word_embeddings.weight[3] = 0  # the tied MLM decoder's weight
    masks = pruning_masks(model)
    assert sorted(masks) == ["bert.encoder.layer.0.attention.self.query.weight"], (
        "the tied decoder weight is the word embedding (its zero row is [PAD]): not a pruning mask")
    assert masks["bert.encoder.layer.0.attention.self.query.weight"].dtype == torch.bool
    assert torch.equal(masks["bert.encoder.layer.0.attention.self.query.weight"], query.weight != 0)
    assert pruning_masks(small_bert()) == {}, "a model without zeros has nothing to mask"


@pytest.mark.parametrize("change, error, message", [
    (lambda m, i, l: ([], i, l), TypeError, "masks must be a dict"),
    (lambda m, i, l: ({"query.weight": None}, i, l), ValueError, "not a parameter of the model"),
    (lambda m, i, l: ({"bert.encoder.layer.0.attention.self.query.weight": torch.ones(3, dtype=torch.bool)}, i, l),
     ValueError, "must be a bool tensor of shape (128, 128)"),
    (lambda m, i, l: (m, i, l[:, :3]), ValueError, "labels must be an integer tensor of input_ids' shape"),
    (lambda m, i, l: (m, i, l.float()), ValueError, "labels must be an integer tensor"),
    (lambda m, i, l: (m, i, torch.full_like(l, -100)), ValueError, "score no position"),
    (lambda m, i, l: (m, {**i, "labels": l}, l), ValueError, "pass the labels as the labels argument"),
    (lambda m, i, l: (m, i["input_ids"], l), TypeError, "inputs must be a dict"),
])
def test_masked_finetune_step_rejects_bad_arguments(change, error, message):
    from given.pruning_tools import pruning_masks
    from pruning import masked_finetune_step
    model = small_bert()
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight[:, :5] = 0
    inputs = {"input_ids": torch.randint(0, 100, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    labels = torch.randint(0, 100, (2, 6))
    masks, inputs, labels = change(pruning_masks(model), inputs, labels)
    with pytest.raises(error, match=re.escape(message)):
        masked_finetune_step(model, masks, inputs, labels, torch.optim.AdamW(model.parameters()))
