"""Autograder for Exercise 1 (quantization.py).

References are independent of the module: hand-computed vectors, a per-row Python loop, float
matmul, and a NumPy re-statement of LLM.int8() (``reference_llm_int8`` below).
The checks of given code (input validation, the int8 and fp16 products, memory_bytes) are in
test_given.py, never graded.
"""
import numpy as np
import pytest
import torch
from torch import nn

from given.quantized_linear import QuantizedLinear, quantize_model
from given.torch_utils import relative_error
from quantization import QUANTIZATION_FORMATS, QuantizedVector
from quantization import mixed_precision_forward, outlier_columns
from tests.helpers import run_seed
from tests.tasks import FORMAT_TASKS, ROUND_TRIP_TASKS

pytestmark = pytest.mark.ex1_quantization


ALPHA_DIVISIONS = ("reciprocal", "true")
"""The two ways honest code computes ``alpha = 127 / max|v|`` in float32: ``"reciprocal"``,
``127 * (1 / m)`` (two roundings: what torch computes for ``127 / tensor``), and ``"true"``,
one correctly rounded division (``torch.div(torch.tensor(127.0), m)``, NumPy). They differ in the
last bit for about a quarter of all m, and so may round a value lying within an ulp of a half
differently; the references accept either."""


def absmax_scale(max_abs, division="reciprocal"):
    """``127 / max(max_abs, 1e-30)`` in float32 (NumPy), computed the ``division`` way."""
    max_abs = np.maximum(max_abs, np.float32(1e-30)).astype(np.float32)
    if division == "reciprocal":
        return (np.float32(1) / max_abs).astype(np.float32) * np.float32(127)
    return (np.float32(127) / max_abs).astype(np.float32)


def nearest_reference(out, reference):
    """``reference(division)`` for the division in ``ALPHA_DIVISIONS`` that lies closest to ``out``."""
    candidates = [reference(division) for division in ALPHA_DIVISIONS]
    if not isinstance(out, torch.Tensor) or out.shape != candidates[0].shape:
        return candidates[0]
    return min(candidates, key=lambda c: float((out.double() - c.double()).abs().max()) if c.numel() else 0.0)


def reference_llm_int8(x, w, threshold, division="reciprocal"):
    """LLM.int8() restated in NumPy, from the paper: fp16 outlier columns (|x| >= threshold),
    absmax int8 per row of x and per column of w for the rest, exact integer products."""
    x = x.numpy().astype(np.float32)
    w = w.numpy().astype(np.float32)
    outliers = (np.abs(x) >= threshold).any(axis=0) if threshold else np.zeros(x.shape[1], bool)
    fp16_part = (x[:, outliers].astype(np.float16).astype(np.float64)
                 @ w[outliers].astype(np.float16).astype(np.float64))
    xr, wr = x[:, ~outliers], w[~outliers]
    if xr.shape[1] == 0:
        return torch.from_numpy(fp16_part.astype(np.float32))
    sx = absmax_scale(np.abs(xr).max(axis=1, keepdims=True), division)
    sw = absmax_scale(np.abs(wr).max(axis=0, keepdims=True), division)
    qx = np.clip(np.round(xr * sx), -127, 127).astype(np.int64)
    qw = np.clip(np.round(wr * sw), -127, 127).astype(np.int64)
    int8_part = (qx @ qw) / (sx.astype(np.float64) * sw.astype(np.float64))
    return torch.from_numpy((fp16_part + int8_part).astype(np.float32))


def reference_format(vector, fmt, division="reciprocal"):
    """One 1-D vector in ``fmt``, restated in NumPy from the table in quantization.py:
    ``(q, scale, dequantized)``; float32 arithmetic, round half to even as ``torch.round``."""
    v = vector.numpy().astype(np.float32)
    if fmt == "fp16":
        return v.astype(np.float16), None, v.astype(np.float16).astype(np.float32)
    if fmt == "int8":
        alpha = absmax_scale(np.abs(v).max(), division)
        q = np.clip(np.rint(v * alpha), -127, 127)
        return q.astype(np.int8), alpha, (q.astype(np.float32) / alpha).astype(np.float32)
    scale = np.abs(v).mean(dtype=np.float32)
    if fmt == "1bit":
        q = np.where(v > 0, 1, -1)
    else:
        q = np.clip(np.rint(v / max(scale, np.float32(1e-8))), -1, 1)
    return q.astype(np.int8), scale, (scale * q.astype(np.float32)).astype(np.float32)


def activations_with_outliers(tokens=16, features=64):
    """Gaussian activations with outlier feature columns of both signs (as in real transformers)."""
    x = torch.randn(tokens, features)
    x[:, 3] += 25.0
    x[::2, 10] -= 30.0
    x[tokens // 3, 40] = 7.5  # a single outlier value is enough to make column 40 an outlier
    return x


# ---------------------------------------------------------------------------------------------
# QuantizedVector: hand-computed cases
# ---------------------------------------------------------------------------------------------

@pytest.mark.task("1.1")
@pytest.mark.worked_example(twin="test_absmax_quantize_on_any_shape_and_dim")
@pytest.mark.points(0)
def test_int8_absmax_rounds_to_nearest():
    v = torch.tensor([0.5, -0.75, 1.25, -1.5, 2.0])
    qv = QuantizedVector(v, "int8")
    expected = torch.tensor([32, -48, 79, -95, 127], dtype=torch.int8)
    assert qv.get_quantized().dtype == torch.int8, "int8 format must store torch.int8 values"
    assert torch.equal(qv.get_quantized(), expected), (
        f"int8 absmax of {v.tolist()}: alpha = 127 / 2.0 = 63.5, q = round(v * alpha) should be "
        f"{expected.tolist()} (round, not truncate), got {qv.get_quantized().tolist()}")
    assert float(qv.alpha) == pytest.approx(63.5), f"alpha should be 127 / max|v| = 63.5, got {qv.alpha}"


@pytest.mark.task("1.2")
@pytest.mark.worked_example(twin="test_absmax_dequantize_is_q_over_alpha_on_any_shape")
@pytest.mark.points(0)
def test_int8_dequantize_is_q_over_alpha():
    v = torch.tensor([0.5, -0.75, 1.25, -1.5, 2.0])
    restored = QuantizedVector(v, "int8").dequantize()
    expected = torch.tensor([32, -48, 79, -95, 127], dtype=torch.float32) / 63.5
    assert restored.dtype == torch.float32 and restored.shape == v.shape
    torch.testing.assert_close(restored, expected, msg="int8 dequantize must return q / alpha")


@pytest.mark.task("1.1")
@pytest.mark.worked_example(twin="test_absmax_quantize_on_any_shape_and_dim")
@pytest.mark.points(0)
def test_int8_keeps_sign_of_largest_negative_value():
    qv = QuantizedVector(torch.tensor([-4.0, 1.0, 2.0]), "int8")
    assert qv.get_quantized().tolist() == [-127, 32, 64], (
        "for [-4, 1, 2], max|v| = 4 so q = round([-4, 1, 2] * 127 / 4) = [-127, 32, 64]")


@pytest.mark.task("1.3")
@pytest.mark.worked_example(twin="test_fp16_quantize_on_any_shape")
@pytest.mark.points(0)
def test_fp16_format():
    v = torch.tensor([1.0, 0.1, -3.14159, 60000.0])
    qv = QuantizedVector(v, "fp16")
    assert qv.get_quantized().dtype == torch.float16, "fp16 format must store torch.float16"
    restored = qv.dequantize()
    assert restored.dtype == torch.float32
    assert restored[1].item() == 0.0999755859375, "0.1 in fp16 is 0.0999755859375"
    assert torch.equal(restored, v.half().float())


@pytest.mark.task("1.4")
@pytest.mark.worked_example(twin="test_binary_quantize_on_any_shape_and_dim")
@pytest.mark.points(0)
def test_1bit_signs_and_mean_abs_scale():
    v = torch.tensor([0.5, -2.0, 0.0, 1.5])
    qv = QuantizedVector(v, "1bit")
    assert qv.get_quantized().dtype == torch.int8
    assert qv.get_quantized().tolist() == [1, -1, -1, 1], (
        f"1bit of {v.tolist()}: positive -> +1, negative or zero -> -1 (BitNet's Sign)")
    assert float(qv.alpha) == pytest.approx(1.0), "beta = mean|v| = (0.5 + 2 + 0 + 1.5) / 4 = 1.0"
    torch.testing.assert_close(qv.dequantize(), torch.tensor([1.0, -1.0, -1.0, 1.0]))


@pytest.mark.task("1.5")
@pytest.mark.worked_example(twin="test_ternary_quantize_on_any_shape_and_dim")
@pytest.mark.points(0)
def test_158bit_absmean_rounds_with_zero_band_of_half_gamma():
    v = torch.tensor([0.2, -1.0, 0.5, 2.0, -0.1, 0.0])
    gamma = 3.8 / 6
    qv = QuantizedVector(v, "1.58bit")
    assert qv.get_quantized().dtype == torch.int8
    assert qv.get_quantized().tolist() == [0, -1, 1, 1, 0, 0], (
        f"1.58bit of {v.tolist()}: gamma = mean|v| = {gamma:.4f}, q = clip(round(v / gamma), -1, 1) "
        "= [0, -1, 1, 1, 0, 0]; note 0.5 / gamma = 0.79 rounds to 1 (the zero band is |v| <= gamma / 2)")
    assert float(qv.alpha) == pytest.approx(gamma)
    torch.testing.assert_close(qv.dequantize(), gamma * torch.tensor([0.0, -1, 1, 1, 0, 0]))


@pytest.mark.task(ROUND_TRIP_TASKS, param="fmt")
@pytest.mark.worked_example(twin="test_absmax_quantize_on_any_shape_and_dim")
@pytest.mark.points(0)
@pytest.mark.parametrize("fmt", QUANTIZATION_FORMATS)
def test_all_zero_vector_dequantizes_to_exact_zeros(fmt):
    matrix = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0], [0.5, -0.75, 1.25, -1.5, 2.0]])
    qv = QuantizedVector(matrix, fmt, dim=None if fmt == "fp16" else 1)
    stored_dtype = torch.float16 if fmt == "fp16" else torch.int8
    assert qv.get_quantized().dtype == stored_dtype, f"{fmt} stores {stored_dtype} values"
    restored = qv.dequantize()
    assert not torch.isnan(restored).any(), f"{fmt}: an all-zero vector must not give NaN"
    assert torch.equal(restored[0], torch.zeros(5)), f"{fmt}: an all-zero vector must come back as zeros"
    expected = torch.from_numpy(reference_format(matrix[1], fmt)[2])
    torch.testing.assert_close(restored[1], expected, msg=f"{fmt}: the row next to it is quantized as usual")
    if fmt != "fp16":
        assert torch.isfinite(torch.as_tensor(qv.alpha)).all(), f"{fmt}: the scale must stay finite"


@pytest.mark.task(ROUND_TRIP_TASKS, param="fmt")
@pytest.mark.points(1)
@pytest.mark.parametrize("fmt", QUANTIZATION_FORMATS)
def test_input_is_never_modified(fmt):
    v = torch.randn(4, 6)
    before = v.clone()
    qv = QuantizedVector(v, fmt, dim=None if fmt == "fp16" else 1)
    restored = qv.dequantize()
    assert torch.equal(v, before), f"{fmt}: QuantizedVector modified its input"
    expected = nearest_reference(restored, lambda division: torch.stack(
        [torch.from_numpy(reference_format(row, fmt, division)[2]) for row in before]))
    torch.testing.assert_close(restored, expected, msg=f"{fmt}: the (4, 6) matrix, row by row")
    assert qv.original_vector is v or torch.equal(qv.original_vector, before)


# ---------------------------------------------------------------------------------------------
# Vector-wise quantization of a matrix
# ---------------------------------------------------------------------------------------------

@pytest.mark.task(FORMAT_TASKS, param="fmt")
@pytest.mark.points(2)
@pytest.mark.parametrize("fmt", ["int8", "1bit", "1.58bit"])
@pytest.mark.parametrize("dim", [0, 1])
def test_vectorwise_equals_per_vector_loop(fmt, dim):
    matrix = torch.randn(5, 7) * torch.logspace(-2, 1, 7)  # columns of very different ranges
    matrix[2] = 0.0  # an all-zero row
    together = QuantizedVector(matrix, fmt, dim=dim)
    vectors = matrix.unbind(dim=1 - dim)  # dim=1: each row is a vector; dim=0: each column
    got_q = together.get_quantized()
    for division in ALPHA_DIVISIONS:  # NumPy, one vector at a time; the nearer way of computing alpha
        references = [reference_format(vector, fmt, division) for vector in vectors]
        expected_q = torch.stack([torch.from_numpy(q) for q, _, _ in references], dim=1 - dim)
        if torch.equal(got_q, expected_q):
            break
    expected_scale = torch.tensor([float(scale) for _, scale, _ in references])
    assert torch.equal(together.get_quantized(), expected_q), (
        f"{fmt}, dim={dim}: quantizing the (5, 7) matrix vector-wise must equal quantizing each "
        f"{'row' if dim == 1 else 'column'} on its own (expected {expected_q.tolist()}, got "
        f"{together.get_quantized().tolist()})")
    scale_shape = (5, 1) if dim == 1 else (1, 7)
    assert tuple(together.alpha.shape) == scale_shape, (
        f"dim={dim}: expected one scale per {'row' if dim == 1 else 'column'}, shape {scale_shape}")
    torch.testing.assert_close(together.alpha.flatten(), expected_scale)
    assert not torch.isnan(together.dequantize()).any()


@pytest.mark.task("1.1")
@pytest.mark.worked_example(twin="test_absmax_quantize_on_any_shape_and_dim")
@pytest.mark.points(0)
def test_vectorwise_int8_uses_one_scale_per_row_not_per_tensor():
    matrix = torch.tensor([[0.001, -0.002, 0.0005], [100.0, -50.0, 25.0]])
    quantized = QuantizedVector(matrix, "int8", dim=1)
    assert quantized.get_quantized().tolist() == [[64, -127, 32], [127, -64, 32]], (
        "Exercise 1.1 absmax_quantize(dim=1): one alpha per row (127 / 0.002 = 63500 and 127 / 100 = "
        "1.27), q = round(v * alpha) with halves to even (63.5 -> 64, -63.5 -> -64): expected "
        f"[[64, -127, 32], [127, -64, 32]], got {quantized.get_quantized().tolist()}")
    restored = quantized.dequantize()
    small_row_error = relative_error(restored[0], matrix[0])
    assert small_row_error < 0.01, (
        "with dim=1 each row gets its own scale: the row [0.001, -0.002, 0.0005] must survive "
        f"next to [100, -50, 25]; relative error {small_row_error:.3f}")


# ---------------------------------------------------------------------------------------------
# LLM.int8(): mixed_precision_forward
# ---------------------------------------------------------------------------------------------

@pytest.mark.task("1.6")
@pytest.mark.worked_example(twin="test_outlier_columns_on_any_matrix")
@pytest.mark.points(0)
def test_outlier_columns_use_greater_or_equal():
    x = torch.tensor([[0.1, 6.0, -0.2, 5.99],
                      [0.3, 0.0, -6.0, 0.00]])
    found = outlier_columns(x, 6.0)
    assert found.dtype == torch.bool
    assert found.tolist() == [False, True, True, False], (
        f"threshold 6.0 on columns with max |x| = [0.3, 6.0, 6.0, 5.99]: a column is an outlier "
        f"when any |x| >= 6.0 (>=, both signs), expected [False, True, True, False], got {found.tolist()}")
    assert not outlier_columns(x, None).any() and not outlier_columns(x, 0).any(), (
        "threshold None or 0 disables the decomposition: no outlier columns")


@pytest.mark.task("1.8")
@pytest.mark.points(3)
@pytest.mark.parametrize("threshold", [1.0, 3.0, 6.0, 20.0, None, 0])
def test_mixed_precision_matches_llm_int8_reference(threshold):
    x = activations_with_outliers()
    w = torch.randn(64, 32) * 0.1
    out = mixed_precision_forward(x, w, threshold=threshold)
    assert out.dtype == torch.float32 and out.shape == (16, 32)
    reference = nearest_reference(out, lambda division: reference_llm_int8(x, w, threshold, division))
    error = relative_error(out, reference)
    assert error < 1e-5, (
        f"threshold={threshold}: your result differs from LLM.int8() (fp16 outlier columns with "
        f"|x| >= threshold, int8 absmax per row of x and per column of W, int32 accumulation) by "
        f"a relative error of {error:.2e}")


@pytest.mark.task("1.8")
@pytest.mark.points(2)
def test_mixed_precision_is_close_to_float_matmul():
    x = activations_with_outliers()
    w = torch.randn(64, 32) * 0.1
    error = relative_error(mixed_precision_forward(x, w), x @ w)
    assert error < 0.01, f"relative error to the float32 matmul is {error:.4f}; LLM.int8() gives < 1%"


@pytest.mark.task("1.8")
@pytest.mark.points(2)
def test_outlier_decomposition_beats_plain_int8():
    x = torch.randn(32, 64) * 0.5
    x[:, 7] = 60.0  # one systematic outlier feature, as in large transformers
    w = torch.randn(64, 16)
    exact = x @ w
    with_decomposition = relative_error(mixed_precision_forward(x, w, threshold=6.0), exact)
    plain_int8 = relative_error(mixed_precision_forward(x, w, threshold=None), exact)
    assert with_decomposition * 5 < plain_int8, (
        f"an outlier column of 60 squeezes every other value of its row into a few int8 levels: "
        f"plain int8 error {plain_int8:.4f} should be far larger than with the fp16 outlier "
        f"path ({with_decomposition:.4f})")


@pytest.mark.task("1.8")
@pytest.mark.points(1)
def test_value_exactly_at_threshold_goes_to_fp16():
    x = torch.full((4, 8), 0.01)
    x[:, 2] = 6.0
    w = torch.randn(8, 5)
    error = relative_error(mixed_precision_forward(x, w, threshold=6.0), x @ w)
    assert error < 1e-3, (
        "a column whose |x| equals the threshold (6.0) is an outlier (>=): computed in fp16, the "
        f"small values of the other columns survive; relative error {error:.4f}")


@pytest.mark.task("1.8")
@pytest.mark.points(1)
def test_per_row_scales_protect_small_rows():
    x = torch.randn(2, 64)
    x[0] *= 1e-3
    w = torch.randn(64, 8)
    out = mixed_precision_forward(x, w, threshold=None)
    error = relative_error(out[0], (x @ w)[0])
    # With its own scale, row 0 keeps int8's precision (0.008 typically, 0.03 at worst over 2,000
    # seeds); one scale for the tensor, or per column, rounds all of it to 0 (error 1).
    assert error < 0.1, (
        f"row 0 is 1000x smaller than row 1: with one int8 scale per row it keeps its precision "
        f"(a single per-tensor scale would zero it); relative error on row 0 is {error:.3f}")


@pytest.mark.task("1.8")
@pytest.mark.points(2)
def test_3d_input_and_edge_cases():
    w = torch.randn(64, 32) * 0.1
    x3 = activations_with_outliers(tokens=10).reshape(2, 5, 64)
    out3 = mixed_precision_forward(x3, w)
    assert out3.shape == (2, 5, 32), "a (batch, seq, in) input gives (batch, seq, out)"
    torch.testing.assert_close(out3.reshape(10, 32), nearest_reference(
        out3.reshape(10, 32), lambda division: reference_llm_int8(x3.reshape(10, 64), w, 6.0, division)))

    single = activations_with_outliers(tokens=1)
    out1 = mixed_precision_forward(single, w)
    torch.testing.assert_close(out1, nearest_reference(out1, lambda d: reference_llm_int8(single, w, 6.0, d)))

    empty = mixed_precision_forward(torch.empty(0, 64), w)
    assert empty.shape == (0, 32), "zero tokens give an empty (0, out) result"

    x = torch.randn(3, 64)
    x[1] = 0.0
    out = mixed_precision_forward(x, w)
    assert torch.equal(out[1], torch.zeros(32)), "an all-zero input row gives an all-zero output row"

    all_outliers = mixed_precision_forward(x, w, threshold=1e-6)
    torch.testing.assert_close(all_outliers, x.half().float() @ w.half().float(),
                               msg="when every column is an outlier, everything goes through fp16")


# ---------------------------------------------------------------------------------------------
# Your code inside a model: QuantizedLinear and quantize_model (given code, on your functions)
# ---------------------------------------------------------------------------------------------

@pytest.mark.task({**FORMAT_TASKS, "int8": "1.8"}, param="fmt")
@pytest.mark.points(1)
@pytest.mark.parametrize("fmt, tolerance", [("int8", 0.01), ("fp16", 1e-3), ("1.58bit", 0.7), ("1bit", 0.9)])
def test_quantized_linear_approximates_linear(fmt, tolerance):
    linear = nn.Linear(64, 32)
    x = activations_with_outliers(tokens=6).reshape(2, 3, 64)
    layer = QuantizedLinear(linear, fmt)
    with torch.no_grad():
        error = relative_error(layer(x), linear(x))
    assert layer(x).shape == (2, 3, 32)
    assert error < tolerance, f"QuantizedLinear({fmt}) relative error {error:.3f} >= {tolerance}"
    assert layer.weight_quantized.dtype == (torch.float16 if fmt == "fp16" else torch.int8)
    if fmt != "int8":  # the weight in fmt, one scale per output feature (a row of linear.weight)
        rows = [torch.from_numpy(reference_format(row, fmt)[2]) for row in linear.weight.detach()]
        with torch.no_grad():
            torch.testing.assert_close(layer(x), x @ torch.stack(rows).T + linear.bias, rtol=1e-4, atol=1e-5)
    if fmt == "int8":
        assert layer.last_outlier_count == 3, "columns 3, 10 and 40 hold the outliers"


@pytest.mark.task("1.8")
@pytest.mark.points(2)
def test_quantize_model_on_bert(tiny_bert):
    input_ids = torch.randint(0, tiny_bert.config.vocab_size, (2, 12))
    with torch.no_grad():
        reference = tiny_bert(input_ids=input_ids).logits
    float_bytes = sum(t.numel() * t.element_size()
                      for t in [*tiny_bert.parameters(), *tiny_bert.buffers()])
    float_linears = [m for m in tiny_bert.modules() if isinstance(m, nn.Linear)]
    decoder = tiny_bert.cls.predictions.decoder  # tied to the word embedding: stays float
    to_quantize = [m for m in float_linears if m is not decoder]
    # int8 saves 3 of the 4 bytes of every weight and adds one float32 scale per output feature.
    expected_bytes = float_bytes - sum(3 * m.weight.numel() - 4 * m.out_features for m in to_quantize)

    model, size = quantize_model(tiny_bert, "int8")
    quantized = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(quantized) == len(to_quantize), "every Linear but the tied MLM decoder is quantized"
    assert size == expected_bytes, f"int8 BERT should need {expected_bytes} bytes, got {size}"
    with torch.no_grad():
        error = relative_error(model(input_ids=input_ids).logits, reference)
    assert error < 0.05, f"int8 BERT logits differ from float32 by a relative error of {error:.3f}"


# ---------------------------------------------------------------------------------------------
# Issue 12: a weight quantized once (QuantizedVector), and your LLM.int8() running inside BERT
# ---------------------------------------------------------------------------------------------

def reference_llm_int8_quantized_weight(x, w, threshold, division="reciprocal", accumulator=np.int64):
    """LLM.int8() in NumPy with the weight quantized *once*, over all its rows (as a model stores
    it): int8 absmax per column of w; the outlier rows are its dequantized int8 values in fp16.
    ``accumulator=np.int8`` gives what a product kept in int8 gives: sums that wrap around."""
    x = x.numpy().astype(np.float32)
    w = w.numpy().astype(np.float32)
    sw = absmax_scale(np.abs(w).max(axis=0, keepdims=True), division)
    qw = np.clip(np.round(w * sw), -127, 127)
    outliers = (np.abs(x) >= threshold).any(axis=0) if threshold else np.zeros(x.shape[1], bool)
    w_outlier_rows = (qw[outliers].astype(np.float32) / sw).astype(np.float32)
    fp16_part = (x[:, outliers].astype(np.float16).astype(np.float64)
                 @ w_outlier_rows.astype(np.float16).astype(np.float64))
    xr = x[:, ~outliers]
    if xr.shape[1] == 0:  # every column an outlier: no int8 part
        return torch.from_numpy(fp16_part.astype(np.float32))
    sx = absmax_scale(np.abs(xr).max(axis=1, keepdims=True), division)
    qx = np.clip(np.round(xr * sx), -127, 127).astype(accumulator)
    int8_part = (qx @ qw[~outliers].astype(accumulator)) / (sx.astype(np.float64) * sw.astype(np.float64))
    return torch.from_numpy((fp16_part + int8_part).astype(np.float32))


@pytest.mark.task("1.7")
@pytest.mark.points(1)
def test_int8_vectorwise_matmul_takes_a_weight_quantized_once():
    from quantization import int8_vectorwise_matmul
    x, w = torch.randn(9, 40), torch.randn(40, 12) * 0.1
    w_q = QuantizedVector(w, "int8", dim=0)
    stored = w_q.quantized_vector.clone()
    out = int8_vectorwise_matmul(x, w_q)
    task = "Exercise 1.7 int8_vectorwise_matmul(x (9, 40), QuantizedVector(w (40, 12), 'int8', dim=0))"
    assert out.dtype == torch.float32 and out.shape == (9, 12), f"{task}: float32 (9, 12) expected"
    assert_no_wraparound(out, x, w, task)
    error = relative_error(out, nearest_reference(
        out, lambda division: reference_llm_int8_quantized_weight(x, w, None, division)))
    assert error < 1e-5, (
        f"{task}: use the weight's int8 values and column scales as they are (quantize only x, per "
        f"row): relative error {error:.2e} to the reference")
    assert torch.equal(w_q.quantized_vector, stored), "the quantized weight must not be modified"


@pytest.mark.task("1.8")
@pytest.mark.points(2)
@pytest.mark.parametrize("threshold", [6.0, 20.0, None])
def test_mixed_precision_takes_a_weight_quantized_once(threshold):
    x = activations_with_outliers(tokens=12).reshape(3, 4, 64)
    w = torch.randn(64, 32) * 0.1
    w[3] *= 8.0  # the row met by the outlier column 3 is the largest: it sets the column scales
    out = mixed_precision_forward(x, QuantizedVector(w, "int8", dim=0), threshold)
    assert out.dtype == torch.float32 and out.shape == (3, 4, 32)
    reference = nearest_reference(out.reshape(12, 32), lambda division: reference_llm_int8_quantized_weight(
        x.reshape(12, 64), w, threshold, division))
    error = relative_error(out.reshape(12, 32), reference)
    assert error < 1e-5, (
        f"threshold={threshold}, weight = QuantizedVector(w, 'int8', dim=0): the column scales come "
        f"from all rows of w (quantized once), the int8 part uses its rows of the non-outlier "
        f"columns, the fp16 part its dequantized outlier rows; relative error {error:.2e}")
    float_weight = mixed_precision_forward(x, w, threshold)  # the lab's signature still works
    assert relative_error(float_weight.reshape(12, 32), x.reshape(12, 64) @ w) < 0.01


@pytest.mark.task("1.8")
@pytest.mark.points(1)
def test_mixed_precision_with_a_quantized_weight_edge_cases():
    w = torch.randn(64, 32) * 0.1
    w_q = QuantizedVector(w, "int8", dim=0)
    assert mixed_precision_forward(torch.empty(0, 64), w_q).shape == (0, 32)
    x = torch.randn(3, 64)
    every_column = mixed_precision_forward(x, w_q, threshold=1e-6)
    alpha = 127 / w.abs().amax(dim=0, keepdim=True)  # the int8 weight, restated independently
    w_int8 = torch.round(w * alpha).clamp(-127, 127) / alpha
    torch.testing.assert_close(every_column, x.half().float() @ w_int8.half().float(),
                               msg="every column an outlier: the fp16 product with the dequantized int8 weight")


def llm_with_outlier_features(seed=0):
    """A small BERT whose LayerNorms blow up two features, as large transformers do
    (Dettmers et al. 2022): every layer's input then has outlier columns |x| >= 6."""
    from tests.helpers import small_bert
    model = small_bert(seed=seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight[[5, 77]] = 25.0
    return model


@pytest.mark.task("1.8")
@pytest.mark.points(2)
def test_quantized_bert_runs_your_mixed_precision_forward(monkeypatch):
    """A wrong Exercise 1.8 must show in the quantized BERT's output: it is your code that runs."""
    import quantization
    from tests.helpers import bert_inputs, bert_output
    model = llm_with_outlier_features()
    inputs = bert_inputs()
    reference = bert_output(model, inputs)
    model, _ = quantize_model(model, "int8")
    calls = []
    correct_forward = quantization.mixed_precision_forward

    def spy(input, weight, threshold=6.0):
        calls.append(weight)
        return correct_forward(input, weight, threshold)

    monkeypatch.setattr(quantization, "mixed_precision_forward", spy)
    good = bert_output(model, inputs)
    linears = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(calls) == len(linears), "QuantizedLinear calls your mixed_precision_forward once per layer"
    assert all(isinstance(w, QuantizedVector) and w.quantization_format == "int8" and w.dim == 0
               for w in calls), "...with its weight quantized once: QuantizedVector(w, 'int8', dim=0)"
    assert max(m.last_outlier_count for m in linears) >= 2, "the LayerNorms make outlier columns"
    good_error = relative_error(good, reference)
    assert good_error < 0.05, f"int8 BERT logits differ from float32 by {good_error:.3f}"

    def forgets_the_outliers(input, weight, threshold=6.0):  # a wrong 1.8: no fp16 part
        x = input.reshape(-1, input.shape[-1])
        keep = ~quantization.outlier_columns(x, threshold)
        out = quantization.int8_vectorwise_matmul(x[:, keep], weight[keep])
        return out.reshape(*input.shape[:-1], -1)

    monkeypatch.setattr(quantization, "mixed_precision_forward", forgets_the_outliers)
    wrong_error = relative_error(bert_output(model, inputs), reference)
    assert wrong_error > 5 * good_error + 0.05, (
        f"a wrong mixed_precision_forward changes the quantized BERT (error {wrong_error:.3f} vs "
        f"{good_error:.3f} with yours)")


@pytest.mark.task("1.8")
@pytest.mark.points(1)
def test_quantize_model_can_give_the_tied_decoder_an_int8_copy():
    from tests.helpers import bert_inputs, bert_output, small_bert
    model = small_bert()
    inputs = bert_inputs()
    reference = bert_output(model, inputs)
    _, size_untied = quantize_model(small_bert(), "int8")
    model, size = quantize_model(model, "int8", quantize_tied=True)
    decoder = model.cls.predictions.decoder
    assert isinstance(decoder, QuantizedLinear), "quantize_tied=True quantizes the tied MLM decoder"
    embedding = model.bert.embeddings.word_embeddings.weight
    assert embedding.dtype == torch.float32, "the word embedding keeps its float weight"
    # int8 copy + its float32 scales + its float32 bias (the MLM head keeps the tied original)
    extra = decoder.weight_quantized.numel() + 4 * decoder.out_features + 4 * decoder.out_features
    assert size - size_untied == extra, (
        f"the size counts the decoder's int8 copy on top of the float embedding: {extra} more "
        f"bytes expected, got {size - size_untied}")
    error = relative_error(bert_output(model, inputs), reference)
    assert error < 0.05, (f"with the tied decoder in int8 (your mixed_precision_forward), the BERT's logits "
                          f"must stay within 5% of float32's, got a relative error of {error:.3f}")
    with pytest.raises(TypeError, match="quantize_tied"):
        quantize_model(small_bert(), "int8", quantize_tied="yes")


# ---------------------------------------------------------------------------------------------
# The edges each contract names, on inputs drawn for this run (property tests)
# ---------------------------------------------------------------------------------------------
# Each test draws many inputs (hypothesis, seeded by the run: fresh when graded) biased toward
# ties at a boundary, exact zeros, halves, tiny values, one element, 1-D to 4-D and
# non-contiguous tensors, and checks the contract against an oracle written here in NumPy.

from hypothesis import strategies as st  # noqa: E402

from tests.properties import float_tensors, property_test  # noqa: E402


def numpy_absmax(v, dim, division="reciprocal"):
    """``(q, alpha)`` of absmax int8, restated in NumPy float32 (round half to even: np.rint)."""
    v = v.numpy().astype(np.float32)
    max_abs = np.abs(v).max() if dim is None else np.abs(v).max(axis=dim, keepdims=True)
    alpha = absmax_scale(max_abs, division)
    return np.clip(np.rint(v * alpha), -127, 127).astype(np.int8), np.asarray(alpha, np.float32)


def numpy_mean_abs(v, dim):
    v = v.numpy().astype(np.float64)
    return np.abs(v).mean() if dim is None else np.abs(v).mean(axis=dim, keepdims=True)


def dims_of(tensor):
    """Every ``dim`` the contract allows for ``tensor``: None and each index, negative ones too."""
    return st.sampled_from([None, *range(-tensor.dim(), tensor.dim())])


def halfway_tensors():
    """Tensors where ``v * alpha`` lands exactly half-way between two integers: ``v = (k + 0.5) * 2^e``
    next to one ``127 * 2^e`` (so ``alpha = 2^-e`` exactly), with k of both signs."""
    return st.tuples(st.lists(st.integers(-127, 126), min_size=1, max_size=12),
                     st.integers(-20, 20), st.booleans()).map(
        lambda drawn: torch.tensor([(k + 0.5) * 2.0 ** drawn[1] for k in drawn[0]]
                                   + [(-127.0 if drawn[2] else 127.0) * 2.0 ** drawn[1]]))


def assert_scale(scale, expected, dim, shape, task, name):
    expected = torch.as_tensor(expected, dtype=torch.float64)
    scale = torch.as_tensor(scale)
    assert scale.dtype == torch.float32, f"{task}: {name} must be float32, got {scale.dtype}"
    wanted_shape = () if dim is None else expected.shape
    assert tuple(scale.shape) == tuple(wanted_shape), (
        f"{task}: for a {tuple(shape)} tensor and dim={dim}, {name} must have shape "
        f"{tuple(wanted_shape)} (the reduced dimension kept, size 1), got {tuple(scale.shape)}")
    torch.testing.assert_close(scale.double(), expected, rtol=1e-5, atol=1e-35,
                               msg=f"{task}: {name} for dim={dim}")


@pytest.mark.task("1.1")
@pytest.mark.points(3)
@property_test(float_tensors(), st.data())
def test_absmax_quantize_on_any_shape_and_dim(v, data):
    from quantization import absmax_quantize
    dim = data.draw(dims_of(v), label="dim")
    before = v.clone()
    q, alpha = absmax_quantize(v, dim=dim)
    task = f"Exercise 1.1 absmax_quantize(v of shape {tuple(v.shape)}, dim={dim})"
    assert torch.equal(v, before), f"{task}: v was modified"
    assert isinstance(q, torch.Tensor) and q.dtype == torch.int8 and q.shape == v.shape, (
        f"{task}: q must be int8 of v's shape, got {getattr(q, 'dtype', type(q))} "
        f"{tuple(getattr(q, 'shape', ()))}")
    for division in ALPHA_DIVISIONS:  # either way of computing alpha (see ALPHA_DIVISIONS)
        expected_q, expected_alpha = numpy_absmax(v, dim, division)
        if torch.equal(q, torch.from_numpy(expected_q)):
            break
    assert_scale(alpha, expected_alpha, dim, v.shape, task, "alpha = 127 / max|v|")
    assert torch.equal(q, torch.from_numpy(expected_q)), (
        f"{task}: q = round(v * alpha) (torch.round: halves to even) in [-127, 127]; "
        f"{int((q != torch.from_numpy(expected_q)).sum())} of {q.numel()} values differ")


@pytest.mark.task("1.1")
@pytest.mark.points(2)
@property_test(halfway_tensors())
def test_absmax_quantize_rounds_halves_to_even(v):
    from quantization import absmax_quantize
    q, _ = absmax_quantize(v)
    expected = torch.from_numpy(numpy_absmax(v, None)[0])
    scaled = (v * (127 / v.abs().max())).tolist()
    wrong = [(s, int(g), int(e)) for s, g, e in zip(scaled, q.tolist(), expected.tolist()) if g != e]
    assert not wrong, (
        f"Exercise 1.1 absmax_quantize: v * alpha = {wrong[0][0]} is exactly half-way; torch.round "
        f"rounds halves to the even integer ({wrong[0][2]}), got {wrong[0][1]} (floor(x + 0.5) and "
        f"round-half-away-from-zero differ from it)")


@pytest.mark.task("1.2")
@pytest.mark.points(2)
@property_test(float_tensors(), st.data())
def test_absmax_dequantize_is_q_over_alpha_on_any_shape(v, data):
    from quantization import absmax_dequantize
    dim = data.draw(dims_of(v), label="dim")
    q_np, alpha_np = numpy_absmax(v, dim)
    q, alpha = torch.from_numpy(q_np), torch.from_numpy(alpha_np)
    restored = absmax_dequantize(q.clone(), alpha.clone())
    task = f"Exercise 1.2 absmax_dequantize(q of shape {tuple(q.shape)}, alpha of shape {tuple(alpha.shape)})"
    assert isinstance(restored, torch.Tensor) and restored.dtype == torch.float32 and restored.shape == q.shape, \
        f"{task}: the result must be float32 of q's shape"
    expected = torch.from_numpy(q_np.astype(np.float32) / alpha_np)
    torch.testing.assert_close(restored, expected, rtol=1e-6, atol=0, msg=f"{task}: q / alpha")


@pytest.mark.task("1.3")
@pytest.mark.points(1)
@property_test(float_tensors(max_magnitude=6e4))
def test_fp16_quantize_on_any_shape(v):
    from quantization import fp16_quantize
    before = v.clone()
    half = fp16_quantize(v)
    assert torch.equal(v, before), "Exercise 1.3 fp16_quantize: v was modified"
    assert isinstance(half, torch.Tensor) and half.dtype == torch.float16 and half.shape == v.shape, \
        "Exercise 1.3 fp16_quantize: the result must be float16 of v's shape"
    expected = torch.from_numpy(v.numpy().astype(np.float16))
    assert torch.equal(half, expected), "Exercise 1.3 fp16_quantize: each value rounded to the nearest fp16"


@pytest.mark.task("1.4")
@pytest.mark.points(2)
@property_test(float_tensors(), st.data())
def test_binary_quantize_on_any_shape_and_dim(v, data):
    from quantization import binary_quantize
    dim = data.draw(dims_of(v), label="dim")
    before = v.clone()
    q, beta = binary_quantize(v, dim=dim)
    task = f"Exercise 1.4 binary_quantize(v of shape {tuple(v.shape)}, dim={dim})"
    assert torch.equal(v, before), f"{task}: v was modified"
    assert isinstance(q, torch.Tensor) and q.dtype == torch.int8 and q.shape == v.shape, \
        f"{task}: q must be int8 of v's shape"
    expected = torch.from_numpy(np.where(v.numpy() > 0, 1, -1).astype(np.int8))
    assert torch.equal(q, expected), (
        f"{task}: q = +1 where v > 0 and -1 where v <= 0 (zero, and -0.0, go to -1); "
        f"{int((q != expected).sum())} values differ")
    assert_scale(beta, numpy_mean_abs(v, dim), dim, v.shape, task, "beta = mean|v|")


def ternary_allowed(v, gamma):
    """Lowest and highest q that ``clip(round(v / max(gamma, 1e-8)), -1, 1)`` may give: a quotient
    within 1e-5 of a half may round either way (gamma itself is only known to a few ulps)."""
    quotient = v.numpy().astype(np.float64) / np.maximum(gamma, 1e-8)
    low = np.where(np.abs(quotient - np.floor(quotient) - 0.5) < 1e-5, np.floor(quotient), np.rint(quotient))
    high = np.where(np.abs(quotient - np.floor(quotient) - 0.5) < 1e-5, np.ceil(quotient), np.rint(quotient))
    return torch.from_numpy(np.clip(low, -1, 1)), torch.from_numpy(np.clip(high, -1, 1))


@pytest.mark.task("1.5")
@pytest.mark.points(2)
@property_test(float_tensors(), st.data())
def test_ternary_quantize_on_any_shape_and_dim(v, data):
    from quantization import ternary_quantize
    dim = data.draw(dims_of(v), label="dim")
    before = v.clone()
    q, gamma = ternary_quantize(v, dim=dim)
    task = f"Exercise 1.5 ternary_quantize(v of shape {tuple(v.shape)}, dim={dim})"
    assert torch.equal(v, before), f"{task}: v was modified"
    assert isinstance(q, torch.Tensor) and q.dtype == torch.int8 and q.shape == v.shape, \
        f"{task}: q must be int8 of v's shape"
    expected_gamma = numpy_mean_abs(v, dim)
    assert_scale(gamma, expected_gamma, dim, v.shape, task, "gamma = mean|v|")
    low, high = ternary_allowed(v, expected_gamma)
    ok = (q.double() >= low) & (q.double() <= high)
    assert bool(ok.all()), (
        f"{task}: q = clip(round(v / max(gamma, BITNET_EPS)), -1, 1); {int((~ok).sum())} values "
        f"differ, e.g. v = {float(v[~ok][0])} gave {int(q[~ok][0])}")


@pytest.mark.task("1.5")
@pytest.mark.points(2)
@property_test(st.permutations([0.5, -0.5, 1.5, -1.5, 1.0, -1.0]), st.integers(-26, 30))
def test_ternary_quantize_rounds_halves_to_even(values, exponent):
    """v / gamma is exactly 0.5 or 1.5 for some values (gamma = mean|v| = 2^e exactly)."""
    from quantization import ternary_quantize
    scale = 2.0 ** exponent
    v = torch.tensor(values) * scale
    q, gamma = ternary_quantize(v)
    expected = torch.clamp(torch.tensor([0.0 if abs(x) == 0.5 else x for x in values]).round(), -1, 1)
    assert float(gamma) == scale, f"Exercise 1.5 ternary_quantize: gamma = mean|v| = {scale:g}, got {float(gamma)}"
    assert q.tolist() == expected.to(torch.int8).tolist(), (
        f"Exercise 1.5 ternary_quantize({values} * {scale:g}): v / gamma = {values}; round() sends "
        f"+-0.5 to 0 (halves to even) and +-1.5 to +-2, clipped to +-1: expected "
        f"{expected.to(torch.int8).tolist()}, got {q.tolist()}")


@pytest.mark.task("1.5")
@pytest.mark.points(2)
@property_test(st.permutations([0.5, -0.5, 1.5, -1.5, 1.0, -1.0]), st.integers(-90, -30))
def test_ternary_quantize_of_a_tiny_vector_divides_by_the_epsilon(values, exponent):
    """gamma = 2^e < BITNET_EPS: v / max(gamma, eps) is tiny, so every value rounds to 0."""
    from quantization import ternary_quantize
    v = torch.tensor(values) * 2.0 ** exponent
    q, gamma = ternary_quantize(v)
    assert torch.isfinite(torch.as_tensor(gamma)).all() and float(gamma) == 2.0 ** exponent
    assert q.tolist() == [0] * 6, (
        f"Exercise 1.5 ternary_quantize: for v = {values} * 2^{exponent}, gamma = {2.0 ** exponent:.3g} "
        f"is below BITNET_EPS = 1e-8, so v / max(gamma, 1e-8) is tiny and every q is 0; got "
        f"{q.tolist()} (divide by max(gamma, BITNET_EPS), not by gamma)")


@pytest.mark.task("1.5")
@pytest.mark.points(1)
@property_test(float_tensors(max_magnitude=8), st.integers(-34, -22))
def test_ternary_quantize_near_the_epsilon_divides_by_the_larger_of_the_two(v, exponent):
    """gamma from 1e-10 to 1e-5: near BITNET_EPS, where max(gamma, eps) and gamma + eps differ."""
    from quantization import ternary_quantize
    v = v * 2.0 ** exponent
    q, gamma = ternary_quantize(v)
    expected_gamma = numpy_mean_abs(v, None)
    low, high = ternary_allowed(v, expected_gamma)
    ok = (q.double() >= low) & (q.double() <= high)
    assert bool(ok.all()), (
        f"Exercise 1.5 ternary_quantize(v of shape {tuple(v.shape)}, gamma = {float(expected_gamma):.3g}): "
        f"q = clip(round(v / max(gamma, BITNET_EPS)), -1, 1), the larger of the two (not their sum); "
        f"{int((~ok).sum())} values differ, e.g. v = {float(v[~ok][0]):.4g} gave {int(q[~ok][0])}")


def outlier_inputs():
    """``(x, threshold)``: x (tokens, features) with outliers of both signs; the threshold is
    sometimes one of x's own magnitudes (a value exactly at it), sometimes None or 0."""
    @st.composite
    def draw(draw):
        x = draw(float_tensors(min_dims=2, max_dims=2, max_side=7, max_magnitude=50))
        choice = draw(st.sampled_from(["value", "value", "fixed", "none", "zero"]))
        if choice == "value":
            threshold = float(draw(st.sampled_from(x.abs().flatten().tolist())))
        elif choice == "fixed":
            threshold = draw(st.sampled_from([6.0, 0.5, 1e-6, 100.0]))
        else:
            threshold = None if choice == "none" else 0
        return x, threshold
    return draw()


def numpy_outliers(x, threshold):
    x = x.numpy()
    if not threshold:
        return np.zeros(x.shape[1], dtype=bool)
    return (np.abs(x) >= threshold).any(axis=0)


@pytest.mark.task("1.6")
@pytest.mark.points(2)
@property_test(outlier_inputs())
def test_outlier_columns_on_any_matrix(x_and_threshold):
    x, threshold = x_and_threshold
    found = outlier_columns(x.clone(), threshold)
    expected = torch.from_numpy(numpy_outliers(x, threshold))
    task = f"Exercise 1.6 outlier_columns(x of shape {tuple(x.shape)}, threshold={threshold})"
    assert isinstance(found, torch.Tensor) and found.dtype == torch.bool and found.shape == expected.shape, \
        f"{task}: a bool tensor of shape (features,) = {tuple(expected.shape)}"
    assert torch.equal(found, expected), (
        f"{task}: a column is an outlier when any |x| >= threshold (>=, both signs; None or 0: "
        f"none); expected {expected.tolist()}, got {found.tolist()}")


@pytest.mark.task("1.6")
@pytest.mark.points(1)
@property_test(st.integers(1, 8), st.integers(1, 6), st.sampled_from([0.5, 1.0, 6.0, 20.0, 100.0]), st.data())
def test_outlier_columns_compare_x_itself_with_the_threshold(tokens, features, threshold, data):
    """Values one float32 ulp below or above the threshold (fp16 would round them onto it)."""
    below = float(np.nextafter(np.float32(threshold), np.float32(0)))
    above = float(np.nextafter(np.float32(threshold), np.float32(np.inf)))
    x = data.draw(float_tensors(shape=(tokens, features), max_magnitude=threshold / 2), label="x")
    for column in range(features):
        row = data.draw(st.integers(0, tokens - 1))
        x[row, column] = data.draw(st.sampled_from([below, -below, above, -above, threshold]))
    found = outlier_columns(x.clone(), threshold)
    expected = torch.from_numpy(numpy_outliers(x, threshold))
    assert isinstance(found, torch.Tensor) and torch.equal(found, expected), (
        f"Exercise 1.6 outlier_columns(x of shape {tuple(x.shape)}, threshold={threshold}): compare x as "
        f"it is (float32), not a rounded copy: {below!r} is below the threshold, {above!r} above it; "
        f"expected {expected.tolist()}, got {getattr(found, 'tolist', lambda: found)()}")


@st.composite
def matmul_operands(draw, max_tokens=6):
    """``(x, w)``: x (tokens, k), w (k, out), with zeros, ties and halves; sometimes a zero column."""
    k, out = draw(st.integers(1, 9)), draw(st.integers(1, 6))
    x = draw(float_tensors(shape=(draw(st.integers(1, max_tokens)), k), max_magnitude=20))
    w = draw(float_tensors(shape=(k, out), max_magnitude=3))
    return x, w


def assert_no_wraparound(out, x, w, task):
    """A product that equals int8 @ int8's (kept in int8: its sums wrap around) fails, saying so."""
    wrapped = reference_llm_int8_quantized_weight(x, w, None, accumulator=np.int8)
    exact = reference_llm_int8_quantized_weight(x, w, None)
    if isinstance(out, torch.Tensor) and out.shape == exact.shape and not torch.allclose(out, exact, rtol=1e-4) \
            and torch.allclose(out, wrapped, rtol=1e-4, atol=1e-6):
        pytest.fail(f"{task}: the integer products wrapped around: int8 @ int8 keeps its sums in int8 "
                    "(127 * 127 overflows it); multiply with int8_matmul_int32, exact in int32", pytrace=False)


def assert_product_close(out, expected, task, what):
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == expected.shape, (
        f"{task}: the result must be float32 of shape {tuple(expected.shape)}, got "
        f"{getattr(out, 'dtype', type(out))} {tuple(getattr(out, 'shape', ()))}")
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5 * max(scale, 1e-30) + 1e-30,
                               msg=f"{task}: {what}")


@pytest.mark.task("1.7")
@pytest.mark.points(3)
@property_test(matmul_operands(), st.booleans())
def test_int8_vectorwise_matmul_on_any_operands(operands, quantized_once):
    from quantization import int8_vectorwise_matmul
    x, w = operands
    x_before, w_before = x.clone(), w.clone()
    weight = QuantizedVector(w, "int8", dim=0) if quantized_once else w
    out = int8_vectorwise_matmul(x, weight)
    task = (f"Exercise 1.7 int8_vectorwise_matmul(x {tuple(x.shape)}, w {tuple(w.shape)}"
            f"{' as QuantizedVector(w, int8, dim=0)' if quantized_once else ''})")
    assert torch.equal(x, x_before) and torch.equal(w, w_before), f"{task}: an input was modified"
    assert_no_wraparound(out, x, w, task)
    expected = nearest_reference(out, lambda division: reference_llm_int8_quantized_weight(
        x, w, None, division))  # no outliers: all of it in int8
    assert_product_close(out, expected, task,
                         "int8 absmax per row of x and per column of w, multiplied exactly "
                         "(int8_matmul_int32: int8 @ int8 wraps around), then / (alpha_x * alpha_w)")


@pytest.mark.task("1.7")
@pytest.mark.points(1)
@pytest.mark.parametrize("quantized_once", [False, True])
def test_int8_vectorwise_matmul_multiplies_the_int8_values(monkeypatch, quantized_once):
    """Step 2: the product is int8_matmul_int32 of the two int8 matrices (not a float matmul of the
    dequantized operands, which is what int8 inference avoids)."""
    import quantization
    generator = torch.Generator().manual_seed(run_seed())
    x, w = torch.randn(5, 7, generator=generator) * 4, torch.randn(7, 3, generator=generator)
    calls = []
    given_product = quantization.int8_matmul_int32

    def recording(a, b):
        calls.append((a.dtype, b.dtype, tuple(a.shape), tuple(b.shape)))
        return given_product(a, b)

    monkeypatch.setattr(quantization, "int8_matmul_int32", recording)  # the name your module calls
    weight = QuantizedVector(w, "int8", dim=0) if quantized_once else w
    out = quantization.int8_vectorwise_matmul(x, weight)
    task = "Exercise 1.7 int8_vectorwise_matmul(x (5, 7), w (7, 3))"
    assert calls == [(torch.int8, torch.int8, (5, 7), (7, 3))], (
        f"{task}: multiply the int8 matrices once with int8_matmul_int32 (step 2), then dequantize "
        f"the int32 result; calls seen: {calls}")
    expected = nearest_reference(out, lambda division: reference_llm_int8_quantized_weight(x, w, None, division))
    assert_product_close(out, expected, task, "int8 product, then / (alpha_x * alpha_w)")


@st.composite
def mixed_precision_operands(draw):
    """``(x, w, threshold)``: x of 1 to 4 dims (a zero-length leading dim sometimes), with outliers."""
    k, out = draw(st.integers(1, 9)), draw(st.integers(1, 6))
    leading = draw(st.sampled_from([(), (), (1,), (3,), (2, 3), (0,), (2, 0), (1, 2, 2)]))
    if not leading and draw(st.booleans()):  # else a 1-D input (in,): one token, no leading dim
        leading = (draw(st.integers(1, 5)),)
    tokens = int(np.prod(leading))
    flat = draw(float_tensors(shape=(max(tokens, 1), k), max_magnitude=40))[:tokens]
    x = flat.reshape(*leading, k)
    w = draw(float_tensors(shape=(k, out), max_magnitude=3))
    choice = draw(st.sampled_from(["value", "fixed", "none", "zero"]))
    if choice == "value" and flat.numel():
        threshold = float(draw(st.sampled_from(flat.abs().flatten().tolist())))
    elif choice in ("value", "fixed"):
        threshold = draw(st.sampled_from([6.0, 1.0, 1e-6]))
    else:
        threshold = None if choice == "none" else 0
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64]))
    return x.to(dtype), w, threshold


@pytest.mark.task("1.8")
@pytest.mark.points(3)
@property_test(mixed_precision_operands(), st.booleans())
def test_mixed_precision_forward_on_any_operands(operands, quantized_once):
    x, w, threshold = operands
    x_before, w_before = x.clone(), w.clone()
    weight = QuantizedVector(w, "int8", dim=0) if quantized_once else w
    out = mixed_precision_forward(x, weight, threshold)
    task = (f"Exercise 1.8 mixed_precision_forward(input {tuple(x.shape)} {x.dtype}, w {tuple(w.shape)}"
            f"{' as QuantizedVector' if quantized_once else ''}, threshold={threshold})")
    assert torch.equal(x, x_before) and torch.equal(w, w_before), f"{task}: an input was modified"
    flat = x.reshape(-1, x.shape[-1]).float()
    reference = reference_llm_int8_quantized_weight if quantized_once else reference_llm_int8
    if flat.shape[0] == 0:
        expected = torch.zeros(0, w.shape[1])
    else:
        expected = nearest_reference(out.reshape(flat.shape[0], -1) if isinstance(out, torch.Tensor) else out,
                                     lambda division: reference(flat, w, threshold, division))
    expected = expected.reshape(*x.shape[:-1], w.shape[1])
    assert_product_close(out, expected, task,
                         "fp16 for the outlier columns (|x| >= threshold), vector-wise int8 for the "
                         "rest, the leading dimensions restored")


@pytest.mark.task("1.8")
@pytest.mark.points(1)
@pytest.mark.parametrize("bias", [True, False])
def test_quantized_linear_with_and_without_bias(bias):
    linear = nn.Linear(12, 5, bias=bias)
    x = activations_with_outliers(tokens=4, features=12 + 40)[:, :12].reshape(2, 2, 12)
    with torch.no_grad():
        out = QuantizedLinear(linear, "int8")(x)
        w = linear.weight.T.detach()
        expected = nearest_reference(out.reshape(4, 5) - (linear.bias if bias else 0), lambda division:
                                     reference_llm_int8_quantized_weight(x.reshape(4, 12), w, 6.0, division))
        expected = expected.reshape(2, 2, 5)
        if bias:
            expected = expected + linear.bias
    assert_product_close(out, expected, f"QuantizedLinear(nn.Linear(12, 5, bias={bias}), 'int8') "
                                        "with your 1.6-1.8", "LLM.int8() of the stored weight, plus the bias if any")
