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

4. Granularity: ``groupwise_quantize`` gives every group of ``group_size`` consecutive weights of
   a row its own absmax scale at 2 to 8 bits (as GPTQ and AWQ store 4-bit weights), and
   ``kmeans_quantize`` replaces every weight by the index of one of ``2 ** bits`` centroids that
   k-means places where the weights are (Deep Compression's codebooks).

Exercises (each stub raises ``NotImplementedError("Exercise 1.N: ...")``):
    1.1 ``absmax_quantize``   1.2 ``absmax_dequantize``   1.3 ``fp16_quantize``
    1.4 ``binary_quantize``   1.5 ``ternary_quantize``    1.6 ``outlier_columns``
    1.7 ``int8_vectorwise_matmul``                        1.8 ``mixed_precision_forward``
    1.9 ``groupwise_quantize``, ``groupwise_dequantize``  1.10 ``kmeans_quantize``
"""
import torch

from given.checks import (check_dim, check_floating_tensor, check_groupwise_arguments,
                          check_groupwise_dequantize_arguments, check_kmeans_arguments, check_matmul_arguments)
from given.matmul import FP16_MAX, fp16_matmul, int32_to_float32_in_place, int8_matmul_int32
from given.sizes import packed_values_bytes

INT8_MAX = 127
"""Absmax int8 uses the symmetric range [-127, 127] (not -128), so that q and -q both exist."""

SMALLEST_RANGE = 1e-30
"""Lower bound for ``max|v|`` when computing ``alpha = 127 / max|v|``.

An all-zero vector has ``max|v| = 0``: ``127 / 0 = inf``, and then ``0 * inf = NaN``. Clamping
``max|v|`` to this tiny number keeps ``alpha`` finite, so all-zero vectors quantize to zeros and
dequantize to exact zeros. (A vector whose largest magnitude is below 1e-30 quantizes to zeros.)"""

BITNET_EPS = 1e-8
"""BitNet b1.58's epsilon: ``v / max(mean|v|, eps)`` never divides by zero."""


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
    # Hint: Which value must land exactly on +-127, and what if every value is 0? Every dim (None,
    # any index, negative ones) must give alpha a shape that broadcasts against v.
    # Hint 2, when you want it: python tools/hints.py 1.1
    # BEGIN SOLUTION Exercise 1.1: absmax int8 quantization (alpha = 127 / max|v|, q = round(v * alpha))
    max_abs = _reduce_abs(v, "max", dim).clamp_min(SMALLEST_RANGE)
    alpha = INT8_MAX / max_abs
    # |v * alpha| <= 127 by construction, so rounding is the only step (in place, one temporary).
    q = (v * alpha).round_().to(torch.int8)
    return q, alpha
    # END SOLUTION


def absmax_dequantize(q, alpha):
    """Inverse of ``absmax_quantize``: ``q / alpha`` as float32, same shape as ``q``.

    Args:
        q: int8 tensor. alpha: float32 scale(s) that broadcast against ``q``.
    """
    # Hint: Which dtype does q / alpha have to come out in, and does alpha's shape already fit q's?
    # Hint 2, when you want it: python tools/hints.py 1.2
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
    # Hint: What may this function change, and what must it leave as it was?
    # Hint 2, when you want it: python tools/hints.py 1.3
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
    # Hint: One bit holds two symbols: where does a value of exactly 0 go?
    # Hint 2, when you want it: python tools/hints.py 1.4
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
    # Hint: Where do 0.5 and 1.5 (in units of gamma) go, and what does an all-zero or tiny vector
    # divide by?
    # Hint 2, when you want it: python tools/hints.py 1.5
    # BEGIN SOLUTION Exercise 1.5: 1.58-bit ternary quantization (gamma = mean|v|, q = clip(round(v / gamma), -1, 1))
    gamma = _reduce_abs(v, "mean", dim)
    q = torch.round(v / gamma.clamp_min(BITNET_EPS)).clamp(-1, 1).to(torch.int8)
    return q, gamma
    # END SOLUTION


# ----------------------------------------------------------------------------------------------
# LLM.int8(): Exercises 1.6 - 1.8
# ----------------------------------------------------------------------------------------------
# Given helpers do the products (see given/matmul.py): ``int8_matmul_int32`` (int8 @ int8, exact
# in int32; plain ``@`` on int8 wraps around), ``int32_to_float32_in_place`` (its result as float32,
# in the same memory) and ``fp16_matmul`` (both operands in fp16 precision).

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
    # Hint: A column is an outlier because of one value: which reduction over the tokens finds it,
    # and is a value exactly at the threshold in or out? What does "no threshold" mean?
    # Hint 2, when you want it: python tools/hints.py 1.6
    # BEGIN SOLUTION Exercise 1.6: find the outlier feature columns (any |x| >= threshold)
    if not threshold:
        return torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
    # Some |x| >= t in a column exactly when its largest value is >= t or its smallest <= -t:
    # two reductions that only read x (x.abs() would first write a copy of all of it).
    return (x.amax(dim=0) >= threshold) | (x.amin(dim=0) <= -threshold)
    # END SOLUTION


def int8_vectorwise_matmul(x, weight):
    """``x @ weight`` in int8 with vector-wise scales and exact int32 accumulation.

    1. Quantize ``x`` with one absmax scale per row (token) and ``weight`` with one per column
       (output feature), using ``QuantizedVector(..., "int8", dim=...)``. A ``weight`` that is
       already a ``QuantizedVector(w, "int8", dim=0)`` (as ``QuantizedLinear`` stores it, quantized
       once) is used as it is: do not quantize it again.
    2. Multiply the int8 matrices with ``int8_matmul_int32`` (never ``int8 @ int8``: it wraps).
    3. Dequantize: ``x ~ q_x / alpha_x`` row-wise and ``W ~ q_W / alpha_W`` column-wise, so
       ``(x @ W)[i, j] ~ acc[i, j] / (alpha_x[i] * alpha_W[j])``: convert ``acc`` to float32 once
       (``int32_to_float32_in_place(acc)``, in acc's own memory), then divide it *in place* by
       ``alpha_x`` (a column, (tokens, 1)) and by ``alpha_W`` (a row, (1, out)): broadcasting
       applies each scale across the matrix.

    Why in place: the product has tokens x out values (BERT-base: 1024 x 3072, 12 MB of float32
    for one layer), and every pass over it reads and writes all of them. ``acc / (alpha_x *
    alpha_W)`` first builds the (tokens, out) outer product of the scales, then a second
    (tokens, out) quotient: two more fresh buffers the size of the output, each written and read,
    and a fresh buffer is slow to write the first time (a page fault per 4 KiB).
    ``result.div_(alpha_x).div_(alpha_W)`` works in the one buffer ``result``.

    Args:
        x: float (tokens, k), tokens >= 1, k >= 1.
        weight: float (k, out), or a ``QuantizedVector`` of one, int8 with ``dim=0``.
    Returns:
        float32 (tokens, out).
    """
    # Hint: Which scales go with which operand (a row of x, a column of W), how large can a sum of
    # int8 products get, and how many full-size buffers does your dequantization write?
    # Hint 2, when you want it: python tools/hints.py 1.7
    # BEGIN SOLUTION Exercise 1.7: vector-wise int8 matmul (row scales for x, column scales for W, int32 accumulation)
    x_q = QuantizedVector(x, "int8", dim=1)
    w_q = weight if isinstance(weight, QuantizedVector) else QuantizedVector(weight, "int8", dim=0)
    accumulated = int8_matmul_int32(x_q.quantized_vector, w_q.quantized_vector)
    result = int32_to_float32_in_place(accumulated)  # accumulated's memory now holds float32
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
    (``x * ~outliers``: each column times 0 or 1) both copy the input once, but cutting the matching rows of
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
        input: float (..., in): 2-D (tokens, in) or 3-D (batch, seq, in), etc.; a 1-D (in,)
            is one token and gives (out,).
        weight: float (in, out), or a ``QuantizedVector`` of one, int8 with ``dim=0``.
        threshold: outlier threshold (default 6.0 as in the paper); ``None`` or ``0`` turns the
            decomposition off (everything in int8).

    Returns:
        float32 of shape (..., out).
    """
    check_matmul_arguments(input, weight, threshold)
    # Hint: Split the product in two (outlier columns in fp16, the rest in int8) so that the parts
    # add up to x @ W. Then the edges: any number of leading dims, zero tokens, every column an
    # outlier, a weight quantized once.
    # Hint 2, when you want it: python tools/hints.py 1.8
    # BEGIN SOLUTION Exercise 1.8: LLM.int8() forward (fp16 outlier columns + vector-wise int8 for the rest)
    *leading, in_features = input.shape
    out_features = weight.shape[1]
    x = input.reshape(-1, in_features).to(torch.float32)
    w = weight if isinstance(weight, QuantizedVector) else weight.to(torch.float32)

    if x.shape[0] == 0:
        return torch.zeros(*leading, out_features, dtype=torch.float32, device=x.device)

    is_outlier = outlier_columns(x, threshold)
    has_outliers = bool(is_outlier.any())
    if is_outlier.all():
        result = torch.zeros(x.shape[0], out_features, dtype=torch.float32, device=x.device)
    elif not has_outliers:
        result = int8_vectorwise_matmul(x, w)
    else:  # outlier columns of x (and rows of a float w) set to 0: the whole stored weight, no copy
        keep = ~is_outlier  # (in,) bool; x * keep multiplies column j by 0 or 1 (faster than masked_fill)
        regular_w = w if isinstance(w, QuantizedVector) else w * keep[:, None]
        result = int8_vectorwise_matmul(x * keep, regular_w)
    if has_outliers:
        outlier_rows = w[is_outlier]
        if isinstance(outlier_rows, QuantizedVector):
            outlier_rows = outlier_rows.dequantize()
        fp16_matmul(x[:, is_outlier], outlier_rows, add_to=result)
    return result.reshape(*leading, out_features)
    # END SOLUTION


# ----------------------------------------------------------------------------------------------
# Granularity: one scale per group of weights (Exercise 1.9), a codebook (Exercise 1.10)
# ----------------------------------------------------------------------------------------------
# One scale for a whole tensor wastes levels: a single large weight stretches the grid for all the
# others. One scale per row (per output channel: your 1.1 with dim=1) is better, and one per group
# of 32-128 consecutive weights of a row (as GPTQ and AWQ use at 4 bits) better still, for a few
# bits more per weight: a float32 scale per group of 128 costs 32 / 128 = 0.25 bits per weight.

def groupwise_quantize(v, bits=4, group_size=128):
    """Symmetric absmax quantization with one scale per group of ``group_size`` consecutive values.

    Each row of ``v`` is cut into ``k // group_size`` groups ``v[i, g*group_size : (g+1)*group_size]``;
    every group gets its own absmax scale, as ``absmax_quantize`` gives a whole vector, but with
    ``qmax = 2 ** (bits - 1) - 1`` levels on each side of zero (7 for 4 bits, 127 for 8 bits):

        alpha[i, g] = qmax / max|group|        q = clamp(round(v * alpha of its group), -qmax, qmax)

    Example (bits=4, group_size=2): ``[[0.5, -1.0, 2.0, 0.25]]`` has groups ``[0.5, -1.0]`` and
    ``[2.0, 0.25]``, ``alpha = [[7.0, 3.5]]`` and ``q = [[4, -7, 7, 1]]`` (``round(3.5) = 4``, ties
    to even; ``round(0.875) = 1``).

    With ``group_size = k`` this is per-row (per-channel) quantization; at 8 bits it equals
    ``absmax_quantize(v, dim=1)``.

    Args:
        v: float (n, k) tensor, finite; for an ``nn.Linear`` pass its weight (out, in), so groups
            run along the input dimension as in GPTQ and AWQ.
        bits: 2 to 8 (the values are stored in int8).
        group_size: values per group, >= 1; ``k`` must be a multiple of it (else a ``ValueError``).

    Returns:
        ``(q, alpha)``: ``q`` int8 (n, k) in [-qmax, qmax]; ``alpha`` float32 (n, k // group_size).
        An all-zero group gives ``q = 0`` and a finite ``alpha`` (clamp ``max|group|`` with
        ``SMALLEST_RANGE``), never NaN.
    """
    check_groupwise_arguments(v, bits, group_size)
    # Hint: Can you arrange the values so that each group lies along one dimension? Then each
    # group's scale is a reduction you already wrote for whole vectors.
    # Hint 2, when you want it: python tools/hints.py 1.9
    # BEGIN SOLUTION Exercise 1.9: group-wise quantization (alpha = qmax / max|group| per group of group_size)
    rows, columns = v.shape
    qmax = 2 ** (bits - 1) - 1
    groups = v.to(torch.float32).reshape(rows, columns // group_size, group_size)
    max_abs = groups.abs().amax(dim=-1, keepdim=True).clamp_min(SMALLEST_RANGE)
    alpha = qmax / max_abs
    q = torch.round(groups * alpha).clamp(-qmax, qmax).to(torch.int8)
    return q.reshape(rows, columns), alpha.squeeze(-1)
    # END SOLUTION


def groupwise_dequantize(q, alpha):
    """Inverse of ``groupwise_quantize``: each value divided by its group's scale.

    Args:
        q: int8 (n, k). alpha: float (n, groups); the group size is ``k // groups``.

    Returns:
        float32 (n, k): ``q[i, j] / alpha[i, j // group_size]``.
    """
    check_groupwise_dequantize_arguments(q, alpha)
    # BEGIN SOLUTION Exercise 1.9: group-wise dequantization (q / alpha of its group, float32)
    rows, columns = q.shape
    groups = alpha.shape[1]
    grouped = q.to(torch.float32).reshape(rows, groups, columns // groups)
    return (grouped / alpha.to(torch.float32).unsqueeze(-1)).reshape(rows, columns)
    # END SOLUTION


def kmeans_quantize(v, bits=4, iterations=20):
    """Codebook quantization (Deep Compression, Han et al. 2016): k-means on the values of ``v``.

    Every value is replaced by the index of one of ``2 ** bits`` centroids (the codebook); a layer
    then stores ``bits`` per weight plus the codebook. Lloyd's algorithm, on all values of ``v``
    together (one codebook per tensor):

    1. Initialise the centroids evenly spaced from ``min(v)`` to ``max(v)``, both included
       (``torch.linspace``: Deep Compression's linear initialisation, and the same-bits uniform grid).
    2. Repeat ``iterations`` times:
       a. assign every value to its nearest centroid (a value exactly halfway between two goes to
          the lower index, as ``torch.argmin`` does);
       b. move every centroid to the mean of the values assigned to it; a centroid whose cluster is
          empty keeps its value (never NaN, never 0).
    3. Assign every value to its nearest centroid of the final codebook: these are the indices.

    Deterministic (no random initialisation). Each step can only lower the squared error
    ``sum((codebook[indices] - v) ** 2)``, so it is never above that of the uniform grid of step 1
    (up to float32 rounding: the mean of three copies of 170.9154 may come out one ulp off).

    Args:
        v: float tensor of any shape (non-empty, finite).
        bits: 1 to 8: ``2 ** bits`` centroids, indices stored in uint8.
        iterations: number of assign-and-update rounds, >= 0 (0: the uniform grid).

    Returns:
        ``(codebook, indices)``: ``codebook`` float32 (2 ** bits,); ``indices`` uint8 with ``v``'s
        shape, so ``codebook[indices.long()]`` reconstructs ``v`` (as float32).
    """
    check_kmeans_arguments(v, bits, iterations)
    # Hint: Lloyd's algorithm alternates two steps; what should a centroid that no value chose do?
    # Hint 2, when you want it: python tools/hints.py 1.10
    # BEGIN SOLUTION Exercise 1.10: k-means codebook quantization (linear init from min to max, Lloyd iterations)
    values = v.detach().reshape(-1).to(torch.float32)
    centroid_count = 2 ** bits
    codebook = torch.linspace(float(values.min()), float(values.max()), centroid_count,
                              dtype=torch.float32, device=values.device)
    for _ in range(iterations):
        assignment = nearest_centroid(values, codebook)
        counts = torch.bincount(assignment, minlength=centroid_count)
        sums = torch.zeros_like(codebook).index_add_(0, assignment, values)
        codebook = torch.where(counts > 0, sums / counts.clamp_min(1), codebook)
    return codebook, nearest_centroid(values, codebook).to(torch.uint8).reshape(v.shape)
    # END SOLUTION


# ==============================================================================================
# Given, not graded: the helpers your functions use (read their docstrings), and QuantizedVector,
# which wraps your four formats in one object (QuantizedLinear stores its weight in one).
# ==============================================================================================

def _reduce_abs(v, reduction, dim):
    """``max`` or ``mean`` of ``|v|``: over the whole tensor (``dim=None``) or along ``dim``.

    The result keeps the reduced dimension (size 1), so it broadcasts against ``v``: for a
    (rows, cols) matrix and ``dim=1`` it has shape (rows, 1), one value per row.
    """
    if reduction == "max":  # max|v| = max(max v, -min v): two reads of v, no |v| copy of it
        if dim is None:
            return torch.maximum(v.max(), v.min().neg())
        return torch.maximum(v.amax(dim=dim, keepdim=True), v.amin(dim=dim, keepdim=True).neg_())
    absolute = v.abs()
    return absolute.mean() if dim is None else absolute.mean(dim=dim, keepdim=True)


def scaled_dequantize(q, scale):
    """Dequantize the BitNet formats (1bit, 1.58bit): ``scale * q`` as float32."""
    return scale * q.to(torch.float32)


def nearest_centroid(values, codebook):
    """Index (int64) of the nearest centroid of ``codebook`` for each of the 1-D ``values``; the
    lower index on a tie. Memory: one (values, centroids) distance matrix."""
    return (values[:, None] - codebook[None, :]).abs().argmin(dim=1)


QUANTIZATION_FORMATS = ("int8", "fp16", "1bit", "1.58bit")


def check_format(quantization_format):
    """Raise a clear error unless ``quantization_format`` is one of ``QUANTIZATION_FORMATS``."""
    if quantization_format not in QUANTIZATION_FORMATS:
        raise ValueError(f"unknown quantization_format {quantization_format!r}; "
                         f"allowed formats: {', '.join(QUANTIZATION_FORMATS)}")
    return quantization_format


class QuantizedVector:
    """A tensor quantized to one of ``QUANTIZATION_FORMATS``, quantized on construction.

    Attributes:
        original_vector: the input tensor, as given (never modified); ``None`` for one made by
            ``from_quantized``.
        quantization_format: one of "int8", "fp16", "1bit", "1.58bit".
        dim: ``None`` (one scale for the whole tensor) or the dimension each vector runs along
            (one scale per vector; see ``absmax_quantize``).
        quantized_vector: the stored values (int8, or float16 for "fp16"), shape of the input.
        alpha: the scale it used (see the table in ``quantization.py``); ``None`` for "fp16".

    Example::

        >>> qv = QuantizedVector(torch.tensor([0.5, -0.75, 1.25, -1.5, 2.0]), "int8")
        >>> qv.get_quantized()
        tensor([ 32, -48,  79, -95, 127], dtype=torch.int8)
        >>> QuantizedVector(weight, "int8", dim=0).alpha.shape   # one scale per column
        torch.Size([1, out_features])
        >>> w_q = QuantizedVector(weight, "int8", dim=0); w_q[mask]   # rows, same column scales
    """

    def __init__(self, vector, quantization_format="int8", dim=None):
        check_format(quantization_format)
        check_floating_tensor(vector, "vector")
        check_dim(vector, dim)
        if vector.dtype == torch.float64:
            check_floating_tensor(vector.to(torch.float32), "vector (as float32)")
        self.original_vector = vector
        self.quantization_format = quantization_format
        self.dim = dim
        self.quantized_vector = None
        self.alpha = None
        self.quantize()

    def quantize(self):
        """(Re)compute ``quantized_vector`` and ``alpha`` from ``original_vector``; return the former."""
        v = self.original_vector.detach().to(torch.float32)
        if self.quantization_format == "int8":
            self.quantized_vector, self.alpha = absmax_quantize(v, self.dim)
        elif self.quantization_format == "fp16":
            self.quantized_vector, self.alpha = fp16_quantize(v), None
        elif self.quantization_format == "1bit":
            self.quantized_vector, self.alpha = binary_quantize(v, self.dim)
        else:
            self.quantized_vector, self.alpha = ternary_quantize(v, self.dim)
        return self.quantized_vector

    @classmethod
    def from_quantized(cls, quantized_vector, alpha, quantization_format="int8", dim=None):
        """A ``QuantizedVector`` around values that are already quantized (nothing is recomputed).

        ``original_vector`` is then ``None``: only the quantized values and their scales exist.
        ``QuantizedLinear`` uses it to hand its stored int8 weight to your functions.
        """
        check_format(quantization_format)
        self = cls.__new__(cls)
        self.original_vector = None
        self.quantization_format = quantization_format
        self.dim = dim
        self.quantized_vector = quantized_vector
        self.alpha = alpha
        return self

    @property
    def shape(self):
        """The shape of the quantized tensor (that of ``original_vector``)."""
        return self.quantized_vector.shape

    def __getitem__(self, rows):
        """The rows ``rows`` (an index, slice or bool mask) of a matrix quantized column-wise.

        Only for ``dim=0`` (one scale per column, as for a weight (in, out)): selecting rows keeps
        every column, so the selected rows keep the same column scales. Example: ``weight[mask]``
        of a ``QuantizedVector(weight, "int8", dim=0)`` is a ``QuantizedVector`` of the rows where
        ``mask`` is True, and ``weight[mask].dequantize()`` their float32 values.
        """
        if self.dim != 0 or self.quantized_vector.dim() != 2:
            raise IndexError(f"only the rows of a 2-D QuantizedVector with dim=0 (one scale per "
                             f"column) can be selected; this one has shape "
                             f"{tuple(self.quantized_vector.shape)} and dim={self.dim}")
        values = self.quantized_vector
        if values.stride(0) == 1:  # stored column after column (QuantizedLinear): keep that layout
            selected = values.T[:, rows].T
        else:
            selected = values[rows]
        return QuantizedVector.from_quantized(selected, self.alpha, self.quantization_format, dim=0)

    def dequantize(self):
        """The float32 approximation of ``original_vector`` (same shape)."""
        return dequantize(self.quantized_vector, self.alpha, self.quantization_format)

    def get_quantized(self):
        return self.quantized_vector

    def memory_bytes(self):
        """Bytes this tensor needs in its format when packed, scales included (float32 each).

        int8: 1 byte per value; fp16: 2; 1bit: 1/8 byte (8 signs per byte); 1.58bit: 1/5 byte
        (5 ternary values per byte). This class keeps 1bit and 1.58bit values in int8 in memory
        for simplicity: the number reported is what a packed format stores (``given.sizes``).
        """
        scales = 0 if self.alpha is None else self.alpha.numel()
        return packed_values_bytes(self.quantized_vector.numel(), self.quantization_format) + 4 * scales

    def __repr__(self):
        return (f"QuantizedVector(format={self.quantization_format!r}, "
                f"shape={tuple(self.quantized_vector.shape)}, dim={self.dim})")


def dequantize(q, scale, quantization_format):
    """Float32 values of quantized ``q`` with ``scale`` in ``quantization_format``, with your
    ``absmax_dequantize`` for int8 and ``scaled_dequantize`` for the BitNet formats."""
    if quantization_format == "int8":
        return absmax_dequantize(q, scale)
    if quantization_format == "fp16":
        return q.to(torch.float32)
    return scaled_dequantize(q, scale)
