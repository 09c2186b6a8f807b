"""Exercise 1 "Honey, I shrunk the model!": quantization.

Quantization stores each number of a tensor in fewer bits, plus a few floating-point scales that
map the small integers back to the original range. This module builds the pieces bottom-up:

1. Four number formats for one vector (or, vector-wise, for every row or column of a matrix):

   ======== ===================== ================================= ===========================
   format   stored values         scale ``alpha``                   dequantize
   ======== ===================== ================================= ===========================
   int8     int8 in [-127, 127]   ``127 / max|v|`` (absmax)         ``q / alpha``
   fp16     float16               none (``alpha is None``)          ``q.float()``
   1bit     int8 in {-1, +1}      ``mean|v|`` (BitNet's beta)       ``alpha * q``
   1.58bit  int8 in {-1, 0, +1}   ``mean|v|`` (BitNet b1.58 gamma)  ``alpha * q``
   ======== ===================== ================================= ===========================

   Note the two conventions: absmax int8 *multiplies* by alpha to quantize, the BitNet formats
   *multiply* by alpha to dequantize. ``QuantizedVector`` (given) wraps them all in one object.

2. LLM.int8() (Dettmers et al. 2022, https://arxiv.org/abs/2208.07339), ``mixed_precision_forward``:
   a matrix product ``X @ W`` in which the few feature columns of ``X`` holding outliers
   (``|x| >= 6``) are multiplied in fp16, and everything else in int8 with one scale per row of
   ``X`` and one per column of ``W``, accumulated exactly in int32.

3. ``given/quantized_linear.py`` (given code: ``QuantizedLinear``, ``quantize_model``) puts your
   functions inside a real BERT, so the notebook can measure your own LLM.int8().

Exercises (each stub raises ``NotImplementedError("Exercise 1.N: ...")``):
    1.1 ``absmax_quantize``   1.2 ``absmax_dequantize``   1.3 ``fp16_quantize``
    1.4 ``binary_quantize``   1.5 ``ternary_quantize``    1.6 ``outlier_columns``
    1.7 ``int8_vectorwise_matmul``                        1.8 ``mixed_precision_forward``
"""
import torch

from given.checks import check_floating_tensor, check_matmul_arguments
from given.matmul import FP16_MAX, fp16_matmul, int8_matmul_int32
from given.quantized_vector import QUANTIZATION_FORMATS, QuantizedVector  # noqa: F401 (your formats in one object)

INT8_MAX = 127
"""Absmax int8 uses the symmetric range [-127, 127] (not -128), so that q and -q both exist."""

SMALLEST_RANGE = 1e-30
"""Lower bound for ``max|v|`` when computing ``alpha = 127 / max|v|``.

An all-zero vector has ``max|v| = 0``: ``127 / 0 = inf``, and then ``0 * inf = NaN``. Clamping
``max|v|`` to this tiny number keeps ``alpha`` finite, so all-zero vectors quantize to zeros and
dequantize to exact zeros. (A vector whose largest magnitude is below 1e-30 quantizes to zeros.)"""

BITNET_EPS = 1e-8
"""BitNet b1.58's epsilon: ``v / max(mean|v|, eps)`` never divides by zero."""


def _reduce_abs(v, reduction, dim):
    """``max`` or ``mean`` of ``|v|``: over the whole tensor (``dim=None``) or along ``dim``.

    The result keeps the reduced dimension (size 1), so it broadcasts against ``v``: for a
    (rows, cols) matrix and ``dim=1`` it has shape (rows, 1), one value per row.
    """
    absolute = v.abs()
    if dim is None:
        return absolute.max() if reduction == "max" else absolute.mean()
    if reduction == "max":
        return absolute.amax(dim=dim, keepdim=True)
    return absolute.mean(dim=dim, keepdim=True)


# ----------------------------------------------------------------------------------------------
# The four formats: Exercises 1.1 - 1.5
# ----------------------------------------------------------------------------------------------

def absmax_quantize(v, dim=None):
    """Absmax int8 quantization.

    ``alpha = 127 / max|v|`` and ``q = round(v * alpha)``: the largest magnitude maps to +-127 and
    every value is *rounded* (not truncated) to the nearest integer (``torch.round``, ties to even).
    Example: ``[0.5, -0.75, 1.25, -1.5, 2.0]`` has ``alpha = 63.5`` and gives
    ``[32, -48, 79, -95, 127]``.

    Args:
        v: float32 tensor of any shape (non-empty, finite).
        dim: ``None`` for one scale over the whole tensor, or the dimension along which each
            vector runs: for a (rows, cols) matrix ``dim=1`` gives one scale per row and ``dim=0``
            one per column (vector-wise quantization, in one vectorised call).

    Returns:
        ``(q, alpha)``: ``q`` int8 with the shape of ``v``; ``alpha`` float32, a 0-d tensor for
        ``dim=None``, else ``v``'s shape with ``dim`` reduced to size 1 (it broadcasts against ``v``).
        An all-zero vector gives ``q = 0`` and a finite ``alpha`` (see ``SMALLEST_RANGE``).
    """
    # Hint: _reduce_abs(v, "max", dim) gives max|v| with the right shape; clamp it with
    # SMALLEST_RANGE before dividing. Round, then clamp to [-INT8_MAX, INT8_MAX] and cast.
    # BEGIN SOLUTION Exercise 1.1: absmax int8 quantization (alpha = 127 / max|v|, q = round(v * alpha))
    max_abs = _reduce_abs(v, "max", dim).clamp_min(SMALLEST_RANGE)
    alpha = INT8_MAX / max_abs
    q = torch.round(v * alpha).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, alpha
    # END SOLUTION


def absmax_dequantize(q, alpha):
    """Inverse of ``absmax_quantize``: ``q / alpha`` as float32, same shape as ``q``.

    Args:
        q: int8 tensor. alpha: float32 scale(s) that broadcast against ``q``.
    """
    # BEGIN SOLUTION Exercise 1.2: absmax int8 dequantization (q / alpha, float32)
    return q.to(torch.float32) / alpha
    # END SOLUTION


def fp16_quantize(v):
    """Half precision: ``v.half()``. There is no scale.

    fp16 holds magnitudes up to 65504 (``FP16_MAX``): larger values would silently become inf,
    so they raise a ``ValueError`` instead (given check, below).

    Returns:
        float16 tensor with the shape of ``v``.
    """
    check_floating_tensor(v, "v")
    largest = float(v.abs().max())
    if largest > FP16_MAX:
        raise ValueError(f"fp16 holds magnitudes up to {FP16_MAX:g}; found {largest:g}, which "
                         "would overflow to inf. Use int8 (absmax scales any range) instead.")
    # BEGIN SOLUTION Exercise 1.3: fp16 quantization (cast to float16)
    return v.to(torch.float16)
    # END SOLUTION


def binary_quantize(v, dim=None):
    """1-bit quantization as in BitNet (Wang et al. 2023): signs plus one scale.

    ``q = +1`` where ``v > 0`` and ``-1`` where ``v <= 0`` (BitNet's Sign function sends 0 to -1,
    so there are exactly two symbols), stored as int8. ``beta = mean|v|`` (per vector along
    ``dim``, as in ``absmax_quantize``) and dequantization is ``beta * q``: the scale that keeps
    the mean magnitude. (BitNet also subtracts the mean of the weights before taking signs; this
    lab does not.) An all-zero vector gives ``beta = 0``, so it dequantizes to exact zeros.

    Returns:
        ``(q, beta)``: int8 in {-1, +1} with the shape of ``v``; float32 ``beta`` shaped like
        ``alpha`` in ``absmax_quantize``.
    """
    # BEGIN SOLUTION Exercise 1.4: 1-bit quantization (q = +1 if v > 0 else -1, beta = mean|v|)
    beta = _reduce_abs(v, "mean", dim)
    q = torch.where(v > 0, 1, -1).to(torch.int8)
    return q, beta
    # END SOLUTION


def ternary_quantize(v, dim=None):
    """1.58-bit (ternary) quantization, BitNet b1.58's absmean (Ma et al. 2024).

    ``gamma = mean|v|`` and ``q = clip(round(v / gamma), -1, 1)``, stored as int8 in {-1, 0, +1}:
    ``log2(3) = 1.58`` bits of information per value. Because of the rounding, the zero band is
    ``|v| <= gamma / 2`` (``torch.round`` sends 0.5 to 0, ties to even): rounding is what the
    paper's RoundClip does, and it keeps the quantization error of each value within ``gamma / 2``
    inside the clip range. (The paper uses one gamma per weight matrix; with ``dim`` this lab
    also allows one per row or column.) Divide by
    ``max(gamma, BITNET_EPS)`` so an all-zero vector gives ``q = 0``, never NaN.
    Dequantization is ``gamma * q``.

    Returns:
        ``(q, gamma)``: int8 in {-1, 0, +1} with the shape of ``v``; float32 ``gamma`` shaped like
        ``alpha`` in ``absmax_quantize``.
    """
    # BEGIN SOLUTION Exercise 1.5: 1.58-bit ternary quantization (gamma = mean|v|, q = clip(round(v / gamma), -1, 1))
    gamma = _reduce_abs(v, "mean", dim)
    q = torch.round(v / gamma.clamp_min(BITNET_EPS)).clamp(-1, 1).to(torch.int8)
    return q, gamma
    # END SOLUTION


def scaled_dequantize(q, scale):
    """Dequantize the BitNet formats (1bit, 1.58bit): ``scale * q`` as float32."""
    return scale * q.to(torch.float32)


# ----------------------------------------------------------------------------------------------
# LLM.int8(): Exercises 1.6 - 1.8
# ----------------------------------------------------------------------------------------------
# Two given helpers do the products: ``int8_matmul_int32`` (int8 @ int8, exact in int32; plain
# ``@`` on int8 wraps around) and ``fp16_matmul`` (both operands in fp16 precision); see
# given/matmul.py.

def outlier_columns(x, threshold):
    """Which feature columns of ``x`` hold an outlier (LLM.int8()'s decomposition criterion).

    Args:
        x: float (tokens, features).
        threshold: a column is an outlier column when *any* of its values has
            ``|x| >= threshold`` (``>=``, as bitsandbytes does). ``None`` or ``0`` disables the
            decomposition (no outlier columns), as ``threshold=0.0`` does in bitsandbytes.

    Returns:
        bool tensor of shape (features,).
    """
    # BEGIN SOLUTION Exercise 1.6: find the outlier feature columns (any |x| >= threshold)
    if not threshold:
        return torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
    return x.abs().amax(dim=0) >= threshold
    # END SOLUTION


def int8_vectorwise_matmul(x, weight):
    """``x @ weight`` in int8 with vector-wise scales and exact int32 accumulation.

    1. Quantize ``x`` with one absmax scale per row (token) and ``weight`` with one per column
       (output feature), using ``QuantizedVector(..., "int8", dim=...)``. A ``weight`` that is
       already a ``QuantizedVector(w, "int8", dim=0)`` (as ``QuantizedLinear`` stores it, quantized
       once) is used as it is: do not quantize it again.
    2. Multiply the int8 matrices with ``int8_matmul_int32`` (never ``int8 @ int8``: it wraps).
    3. Dequantize: ``x ~ q_x / alpha_x`` row-wise and ``W ~ q_W / alpha_W`` column-wise, so
       ``(x @ W)[i, j] ~ acc[i, j] / (alpha_x[i] * alpha_W[j])``: convert ``acc`` to float32 once,
       then divide it *in place* by ``alpha_x`` (a column, (tokens, 1)) and by ``alpha_W`` (a row,
       (1, out)): broadcasting applies each scale across the matrix.

    Why in place: the product has tokens x out values (BERT-base: 1024 x 3072, 12 MB of float32
    for one layer), and every pass over it reads and writes all of them. ``acc / (alpha_x *
    alpha_W)`` first builds the (tokens, out) outer product of the scales, then a second
    (tokens, out) quotient: two more fresh buffers the size of the output, each written and read.
    ``result.div_(alpha_x).div_(alpha_W)`` works in the one buffer ``result``.

    Args:
        x: float (tokens, k), tokens >= 1, k >= 1.
        weight: float (k, out), or a ``QuantizedVector`` of one, int8 with ``dim=0``.
    Returns:
        float32 (tokens, out).
    """
    # Hint: isinstance(weight, QuantizedVector) tells the two kinds of weight apart; both give
    # .quantized_vector (int8 (k, out)) and .alpha ((1, out)) once quantized. A tensor method
    # ending in _ (t.div_(s)) works in place and returns t, so the two divisions chain.
    # BEGIN SOLUTION Exercise 1.7: vector-wise int8 matmul (row scales for x, column scales for W, int32 accumulation)
    x_q = QuantizedVector(x, "int8", dim=1)
    w_q = weight if isinstance(weight, QuantizedVector) else QuantizedVector(weight, "int8", dim=0)
    accumulated = int8_matmul_int32(x_q.quantized_vector, w_q.quantized_vector)
    result = accumulated.to(torch.float32)
    return result.div_(x_q.alpha).div_(w_q.alpha)  # row scales, then column scales, in place
    # END SOLUTION


def mixed_precision_forward(input, weight, threshold=6.0):
    """LLM.int8() matrix product ``input @ weight`` (Dettmers et al. 2022, Section 3.2).

    ATTENTION: ``weight`` has shape (in, out), as in the original lab, so the product is
    ``input @ weight``. ``nn.Linear`` stores its weight as (out, in): pass ``linear.weight.T``.

    1. Flatten ``input`` to (tokens, in).
    2. Outlier columns: the feature columns of ``input`` with any ``|x| >= threshold``
       (``outlier_columns``). Those columns of ``input`` and the matching *rows* of ``weight`` are
       multiplied in fp16 (``fp16_matmul``).
    3. Every other column goes through ``int8_vectorwise_matmul``: give it ``input`` with its
       outlier columns set to zero, and the whole weight. A zero column adds nothing to the
       product, so this is exactly the product of the other columns with the other rows
       (bitsandbytes does the same).
    4. Add the two partial products and restore the leading dimensions.

    Why zero columns instead of cutting them out: cutting (``x[:, ~outliers]``) and zeroing
    (``x.masked_fill(outliers, 0.0)``) both copy the input once, but cutting the matching rows of
    the weight (``weight[~outliers]``) copies almost all of it, in x out values, at every call, for
    a handful of outlier rows. With zeroed columns the stored weight is used as it is.

    Two kinds of ``weight`` must work:

    - a float tensor (in, out): quantized here, at every call, from the rows that step 3 uses
      (one absmax scale per column of those rows): zero its outlier rows too (a zero changes no
      column's absmax), or cut them out;
    - a ``QuantizedVector(w, "int8", dim=0)``: a weight quantized *once*, as a model stores it
      (``QuantizedLinear`` passes its weight this way, like bitsandbytes). Its column scales come
      from all rows of ``w``; ``weight[mask]`` selects rows and keeps those scales, and the
      outlier rows for the fp16 product are its dequantized values (``weight[mask].dequantize()``).

    Edge cases that must work: no outlier column, every column an outlier (skip the int8 part),
    zero tokens (return an empty result), all-zero rows, a single row.

    Args:
        input: float (..., in): 2-D (tokens, in) or 3-D (batch, seq, in), etc.
        weight: float (in, out), or a ``QuantizedVector`` of one, int8 with ``dim=0``.
        threshold: outlier threshold (default 6.0 as in the paper); ``None`` or ``0`` turns the
            decomposition off (everything in int8).

    Returns:
        float32 of shape (..., out).
    """
    check_matmul_arguments(input, weight, threshold)
    # Hint: x.masked_fill(mask, 0.0) zeroes the columns where the (in,) bool mask is True (it
    # broadcasts over the rows); w.masked_fill(mask[:, None], 0.0) zeroes rows. x[:, mask] and
    # weight[mask] select columns and rows (of a tensor and of a QuantizedVector alike). Start the
    # sum from the int8 part (or torch.zeros(tokens, out) when every column is an outlier);
    # fp16_matmul(a, b, add_to=result) adds a product in place.
    # BEGIN SOLUTION Exercise 1.8: LLM.int8() forward (fp16 outlier columns + vector-wise int8 for the rest)
    *leading, in_features = input.shape
    out_features = weight.shape[1]
    x = input.reshape(-1, in_features).to(torch.float32)
    w = weight if isinstance(weight, QuantizedVector) else weight.to(torch.float32)

    if x.shape[0] == 0:
        return torch.zeros(*leading, out_features, dtype=torch.float32, device=x.device)

    is_outlier = outlier_columns(x, threshold)
    if is_outlier.all():
        result = torch.zeros(x.shape[0], out_features, dtype=torch.float32, device=x.device)
    else:  # outlier columns of x (and rows of a float w) set to 0: the whole stored weight, no copy
        regular_x = x.masked_fill(is_outlier, 0.0)
        regular_w = w if isinstance(w, QuantizedVector) else w.masked_fill(is_outlier[:, None], 0.0)
        result = int8_vectorwise_matmul(regular_x, regular_w)
    if is_outlier.any():
        outlier_rows = w[is_outlier]
        if isinstance(outlier_rows, QuantizedVector):
            outlier_rows = outlier_rows.dequantize()
        fp16_matmul(x[:, is_outlier], outlier_rows, add_to=result)
    return result.reshape(*leading, out_features)
    # END SOLUTION
