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
   *multiply* by alpha to dequantize. ``QuantizedVector`` wraps them all.

2. LLM.int8() (Dettmers et al. 2022, https://arxiv.org/abs/2208.07339), ``mixed_precision_forward``:
   a matrix product ``X @ W`` in which the few feature columns of ``X`` holding outliers
   (``|x| >= 6``) are multiplied in fp16, and everything else in int8 with one scale per row of
   ``X`` and one per column of ``W``, accumulated exactly in int32.

3. ``QuantizedLinear`` and ``quantize_model`` (given code) put your functions inside a real
   BERT, so the notebook can measure your own LLM.int8().

Exercises (each stub raises ``NotImplementedError("Exercise 1.N: ...")``):
    1.1 ``absmax_quantize``   1.2 ``absmax_dequantize``   1.3 ``fp16_quantize``
    1.4 ``binary_quantize``   1.5 ``ternary_quantize``    1.6 ``outlier_columns``
    1.7 ``int8_vectorwise_matmul``                        1.8 ``mixed_precision_forward``
"""
import math

import torch
from torch import nn

QUANTIZATION_FORMATS = ("int8", "fp16", "1bit", "1.58bit")

INT8_MAX = 127
"""Absmax int8 uses the symmetric range [-127, 127] (not -128), so that q and -q both exist."""

FP16_MAX = torch.finfo(torch.float16).max  # 65504

SMALLEST_RANGE = 1e-30
"""Lower bound for ``max|v|`` when computing ``alpha = 127 / max|v|``.

An all-zero vector has ``max|v| = 0``: ``127 / 0 = inf``, and then ``0 * inf = NaN``. Clamping
``max|v|`` to this tiny number keeps ``alpha`` finite, so all-zero vectors quantize to zeros and
dequantize to exact zeros. (A vector whose largest magnitude is below 1e-30 quantizes to zeros.)"""

BITNET_EPS = 1e-8
"""BitNet b1.58's epsilon: ``v / max(mean|v|, eps)`` never divides by zero."""


# ----------------------------------------------------------------------------------------------
# Helpers shared by every format (given)
# ----------------------------------------------------------------------------------------------

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


def _check_floating_tensor(tensor, name):
    """Raise a clear error unless ``tensor`` is a non-empty, finite, floating-point tensor."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/"
                        f"float64), got dtype {tensor.dtype}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}): nothing to quantize")
    if not torch.isfinite(tensor.sum()) and not torch.isfinite(tensor).all():  # sum: one cheap pass
        nan_count = int(torch.isnan(tensor).sum())
        inf_count = int(torch.isinf(tensor).sum())
        raise ValueError(f"{name} contains {nan_count} NaN and {inf_count} inf values; "
                         "only finite values can be quantized")


def _check_dim(tensor, dim):
    if dim is None:
        return
    if not isinstance(dim, int) or not -tensor.dim() <= dim < tensor.dim():
        raise ValueError(f"dim must be None or an int in [{-tensor.dim()}, {tensor.dim() - 1}] "
                         f"for a tensor of shape {tuple(tensor.shape)}, got {dim!r}")


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
    ``|v| < gamma / 2`` (0.5 rounds to 0, ties to even), *not* ``|v| < gamma`` as some versions of
    this lab used: rounding is what the paper's RoundClip does, and it keeps the quantization
    error of each value below ``gamma / 2`` inside the clip range. Divide by
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
# QuantizedVector: one object per quantized tensor (given)
# ----------------------------------------------------------------------------------------------

class QuantizedVector:
    """A tensor quantized to one of ``QUANTIZATION_FORMATS``, quantized on construction.

    Attributes:
        original_vector: the input tensor, as given (never modified).
        quantization_format: one of "int8", "fp16", "1bit", "1.58bit".
        dim: ``None`` (one scale for the whole tensor) or the dimension each vector runs along
            (one scale per vector; see ``absmax_quantize``).
        quantized_vector: the stored values (int8, or float16 for "fp16"), shape of the input.
        alpha: the scale it used (see the table in the module docstring); ``None`` for "fp16".

    Example::

        >>> qv = QuantizedVector(torch.tensor([0.5, -0.75, 1.25, -1.5, 2.0]), "int8")
        >>> qv.get_quantized()
        tensor([ 32, -48,  79, -95, 127], dtype=torch.int8)
        >>> QuantizedVector(weight, "int8", dim=0).alpha.shape   # one scale per column
        torch.Size([1, out_features])
    """

    def __init__(self, vector, quantization_format="int8", dim=None):
        if quantization_format not in QUANTIZATION_FORMATS:
            raise ValueError(f"unknown quantization_format {quantization_format!r}; "
                             f"allowed formats: {', '.join(QUANTIZATION_FORMATS)}")
        _check_floating_tensor(vector, "vector")
        _check_dim(vector, dim)
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

    def dequantize(self):
        """The float32 approximation of ``original_vector`` (same shape)."""
        if self.quantization_format == "int8":
            return absmax_dequantize(self.quantized_vector, self.alpha)
        if self.quantization_format == "fp16":
            return self.quantized_vector.to(torch.float32)
        return scaled_dequantize(self.quantized_vector, self.alpha)

    def get_quantized(self):
        return self.quantized_vector

    def memory_bytes(self):
        """Bytes this tensor needs in its format, scales included (float32 each).

        int8: 1 byte per value; fp16: 2; 1bit: 1/8 byte per value (bits packed 8 to a byte);
        1.58bit: the *packed* cost of log2(3) = 1.585 bits per value (e.g. 5 ternary values fit in
        one byte, 3^5 = 243 <= 256). Note that this class keeps 1bit and 1.58bit values in int8
        in memory for simplicity: the number reported is what a packed format would store.
        """
        bits_per_value = {"int8": 8, "fp16": 16, "1bit": 1, "1.58bit": math.log2(3)}
        values = self.quantized_vector.numel()
        scales = 0 if self.alpha is None else self.alpha.numel()
        return math.ceil(values * bits_per_value[self.quantization_format] / 8) + 4 * scales

    def __repr__(self):
        return (f"QuantizedVector(format={self.quantization_format!r}, "
                f"shape={tuple(self.quantized_vector.shape)}, dim={self.dim})")


# ----------------------------------------------------------------------------------------------
# LLM.int8(): Exercises 1.6 - 1.8, with two given matrix-product helpers
# ----------------------------------------------------------------------------------------------

def int8_matmul_int32(a, b):
    """Exact product of two int8 matrices, accumulated in int32 (given helper).

    Beware: ``a @ b`` on two int8 tensors returns *int8* on CPU and silently wraps around
    (127 * 127 = 16129 does not fit in 8 bits). This helper uses ``torch._int_mm`` (an int8 GEMM
    with int32 accumulation: AVX512-VNNI on recent CPUs, tensor cores on CUDA) where it exists and
    the shapes allow, else float64, which is exact for int8 products with fewer than 2^38 terms.

    Args:
        a: int8 (m, k). b: int8 (k, n).
    Returns:
        int32 (m, n), exactly ``sum_k a[i, k] * b[k, j]``.
    """
    if _int_mm_supported(a, b):
        return torch._int_mm(a, b)
    return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)


def _int_mm_supported(a, b):
    if not hasattr(torch, "_int_mm") or a.device != b.device:
        return False
    if a.device.type == "cpu":
        return True
    if a.device.type == "cuda":  # cuBLASLt's int8 GEMM shape rules
        m, k = a.shape
        n = b.shape[1]
        return m > 16 and k % 8 == 0 and n % 8 == 0
    return False


def fp16_matmul(a, b, add_to=None):
    """``a @ b`` with both operands in fp16 precision; float32 result (given helper).

    On CUDA this is a real fp16 matmul. CPUs mostly have no fp16 arithmetic (an fp16 matmul of
    BERT-base size takes minutes there), so on CPU the operands are *rounded* to fp16 and then
    multiplied in float32: the same rounding of the inputs, at float32 speed.

    Args:
        a: float (m, k). b: float (k, n). Magnitudes above 65504 (``FP16_MAX``) would become inf
            in fp16 and raise a ``ValueError`` instead.
        add_to: optional float32 (m, n) tensor: the product is added to it in place and it is
            returned (one pass over the output instead of a new tensor and an addition).
    """
    for name, operand in (("a", a), ("b", b)):
        if operand.numel() and float(operand.abs().max()) > FP16_MAX:
            raise ValueError(f"fp16_matmul: operand {name} holds |values| up to "
                             f"{float(operand.abs().max()):g}, beyond fp16's {FP16_MAX:g}")
    if a.device.type == "cuda":
        product = (a.to(torch.float16) @ b.to(torch.float16)).to(torch.float32)
        return product if add_to is None else add_to.add_(product)
    a, b = a.to(torch.float16).to(torch.float32), b.to(torch.float16).to(torch.float32)
    return a @ b if add_to is None else add_to.addmm_(a, b)


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
       (output feature), using ``QuantizedVector(..., "int8", dim=...)``.
    2. Multiply the int8 matrices with ``int8_matmul_int32`` (never ``int8 @ int8``: it wraps).
    3. Dequantize: ``x ~ q_x / alpha_x`` row-wise and ``W ~ q_W / alpha_W`` column-wise, so
       ``(x @ W)[i, j] ~ acc[i, j] / (alpha_x[i] * alpha_W[j])``: divide by the outer product of
       the scales.

    Args:
        x: float (tokens, k), tokens >= 1, k >= 1. weight: float (k, out).
    Returns:
        float32 (tokens, out).
    """
    # BEGIN SOLUTION Exercise 1.7: vector-wise int8 matmul (row scales for x, column scales for W, int32 accumulation)
    x_q = QuantizedVector(x, "int8", dim=1)
    w_q = QuantizedVector(weight, "int8", dim=0)
    accumulated = int8_matmul_int32(x_q.quantized_vector, w_q.quantized_vector)
    return accumulated.to(torch.float32) / (x_q.alpha * w_q.alpha)
    # END SOLUTION


def mixed_precision_forward(input, weight, threshold=6.0):
    """LLM.int8() matrix product ``input @ weight`` (Dettmers et al. 2022, Section 3.2).

    ATTENTION: ``weight`` has shape (in, out), as in the original lab, so the product is
    ``input @ weight``. ``nn.Linear`` stores its weight as (out, in): pass ``linear.weight.T``.

    1. Flatten ``input`` to (tokens, in).
    2. Outlier columns: the feature columns of ``input`` with any ``|x| >= threshold``
       (``outlier_columns``). Those columns of ``input`` and the matching *rows* of ``weight`` are
       multiplied in fp16 (``fp16_matmul``).
    3. Every other column goes through ``int8_vectorwise_matmul``.
    4. Add the two partial products and restore the leading dimensions.

    Edge cases that must work: no outlier column, every column an outlier (skip the int8 part),
    zero tokens (return an empty result), all-zero rows, a single row.

    Args:
        input: float (..., in): 2-D (tokens, in) or 3-D (batch, seq, in), etc.
        weight: float (in, out).
        threshold: outlier threshold (default 6.0 as in the paper); ``None`` or ``0`` turns the
            decomposition off (everything in int8).

    Returns:
        float32 of shape (..., out).
    """
    _check_matmul_arguments(input, weight, threshold)
    # Hint: torch.zeros(tokens, out) is a good start for the sum; x[:, mask] selects columns
    # and weight[mask] selects rows.
    # BEGIN SOLUTION Exercise 1.8: LLM.int8() forward (fp16 outlier columns + vector-wise int8 for the rest)
    *leading, in_features = input.shape
    out_features = weight.shape[1]
    x = input.reshape(-1, in_features).to(torch.float32)
    w = weight.to(torch.float32)
    result = torch.zeros(x.shape[0], out_features, dtype=torch.float32, device=x.device)
    if x.shape[0] == 0:
        return result.reshape(*leading, out_features)

    is_outlier = outlier_columns(x, threshold)
    if is_outlier.any():
        result += fp16_matmul(x[:, is_outlier], w[is_outlier])
    if not is_outlier.all():
        result += int8_vectorwise_matmul(x[:, ~is_outlier], w[~is_outlier])
    return result.reshape(*leading, out_features)
    # END SOLUTION


def _check_matmul_arguments(input, weight, threshold):
    for name, tensor in (("input", input), ("weight", weight)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if input.dim() < 1 or weight.dim() != 2:
        raise ValueError(f"expected input of shape (..., in) and weight of shape (in, out); got "
                         f"input {tuple(input.shape)} and weight {tuple(weight.shape)}")
    if input.shape[-1] != weight.shape[0]:
        hint = (" (weight looks like nn.Linear's (out, in) layout: pass weight.T)"
                if input.shape[-1] == weight.shape[1] else "")
        raise ValueError(f"shape mismatch: input has {input.shape[-1]} features but weight has "
                         f"{weight.shape[0]} rows; weight must be (in, out){hint}")
    if threshold is not None and (not isinstance(threshold, (int, float)) or threshold < 0
                                  or math.isnan(threshold)):
        raise ValueError(f"threshold must be None or a number >= 0, got {threshold!r}")
    for name, tensor in (("input", input), ("weight", weight)):
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains NaN or inf values; only finite values are allowed")


# ----------------------------------------------------------------------------------------------
# Your quantization inside BERT (given)
# ----------------------------------------------------------------------------------------------

class QuantizedLinear(nn.Module):
    """A drop-in replacement for ``nn.Linear`` whose weight is stored quantized once.

    - "int8": int8 weight with one scale per output feature; forward is LLM.int8() built from your
      ``outlier_columns`` and ``int8_vectorwise_matmul`` pieces, with the weight quantized once at
      construction (as bitsandbytes does) instead of at every call. Outlier rows of the weight are
      taken from its dequantized int8 values, so only int8 is stored.
    - "fp16", "1bit", "1.58bit": forward multiplies by the dequantized weight (weight-only
      quantization; the activations stay in float32). Scales are per output feature.

    ``last_outlier_count`` holds how many outlier columns the last int8 forward saw, so the
    notebook can show where LLM.int8()'s outliers live. The bias stays in float32.
    """

    def __init__(self, linear, quantization_format="int8", threshold=6.0):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.threshold = threshold
        weight_in_out = linear.weight.detach().T.to(torch.float32)  # (in, out), as in the lab
        quantized = QuantizedVector(weight_in_out, quantization_format,
                                    dim=None if quantization_format == "fp16" else 0)
        self.quantization_format = quantization_format
        # Column-major (out, in) storage, transposed back as a view: faster for torch._int_mm.
        self.register_buffer("weight_quantized", quantized.quantized_vector.T.contiguous())
        self.register_buffer("weight_scale", quantized.alpha)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)
        self.memory = quantized.memory_bytes() + (0 if self.bias is None else 4 * self.bias.numel())
        self.last_outlier_count = 0

    def dequantized_weight(self):
        """The float32 (in, out) weight this layer multiplies by."""
        q = self.weight_quantized.T
        if self.quantization_format == "int8":
            return absmax_dequantize(q, self.weight_scale)
        if self.quantization_format == "fp16":
            return q.to(torch.float32)
        return scaled_dequantize(q, self.weight_scale)

    def forward(self, x):
        *leading, in_features = x.shape
        x2d = x.reshape(-1, in_features).to(torch.float32)
        if self.quantization_format == "int8":
            out = self._llm_int8(x2d)
        else:
            out = x2d @ self.dequantized_weight()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*leading, self.out_features).to(x.dtype)

    def _llm_int8(self, x):
        """Same decomposition as ``mixed_precision_forward``, with the weight quantized once.

        Instead of cutting the outlier columns out of ``x`` (and the matching rows out of the
        int8 weight, a copy at every call), they are set to zero for the int8 product: they then
        add nothing to it and do not count in the row scales. They are added back in fp16.
        """
        if x.shape[0] == 0:
            return torch.zeros(0, self.out_features, device=x.device)
        is_outlier = outlier_columns(x, self.threshold)
        self.last_outlier_count = int(is_outlier.sum())
        x_q = QuantizedVector(x.masked_fill(is_outlier, 0.0), "int8", dim=1)
        accumulated = int8_matmul_int32(x_q.quantized_vector, self.weight_quantized.T)
        # acc / (alpha_x alpha_W) as two broadcast products: no (tokens, out) outer-product tensor.
        out = torch.mul(accumulated, 1.0 / self.weight_scale).mul_(1.0 / x_q.alpha)
        if self.last_outlier_count:
            w_rows = absmax_dequantize(self.weight_quantized.T[is_outlier], self.weight_scale)
            fp16_matmul(x[:, is_outlier], w_rows, add_to=out)
        return out

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"format={self.quantization_format!r}, threshold={self.threshold}")


def quantize_model(model, quantization_format="int8", threshold=6.0, skip=()):
    """Replace every ``nn.Linear`` of ``model`` (in place) by a ``QuantizedLinear``.

    Args:
        model: any ``nn.Module``, e.g. a Hugging Face ``BertForMaskedLM``.
        quantization_format: one of ``QUANTIZATION_FORMATS``.
        threshold: LLM.int8() outlier threshold for "int8".
        skip: names (or name prefixes) of Linear layers to keep in float, e.g. ``("cls",)``.
            Linear layers whose weight is tied to another module (BERT's MLM decoder shares the
            word embedding) always stay in float, as in transformers' bitsandbytes integration:
            a quantized copy would *add* memory, since the embedding keeps the float original.

    Returns:
        ``(model, size_bytes)``: the same model object, and the bytes its parameters and buffers
        now need (quantized layers counted by ``QuantizedLinear.memory``, i.e. packed 1bit and
        1.58bit values; everything else as stored).
    """
    if quantization_format not in QUANTIZATION_FORMATS:
        raise ValueError(f"unknown quantization_format {quantization_format!r}; "
                         f"allowed formats: {', '.join(QUANTIZATION_FORMATS)}")
    tied = _tied_parameter_ids(model)
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and id(module.weight) not in tied
               and not any(name == s or name.startswith(s + ".") for s in skip)]
    if not targets:
        raise ValueError("the model has no nn.Linear layer to quantize (after skip)")
    for name, linear in targets:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, QuantizedLinear(linear, quantization_format, threshold))
    return model, model_size_bytes(model)


def _tied_parameter_ids(model):
    """ids of parameters that more than one module holds (e.g. tied input/output embeddings)."""
    owners = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for parameter in module.parameters(recurse=False):
            owners.setdefault(id(parameter), set()).add(id(module))
    return {pid for pid, modules in owners.items() if len(modules) > 1}


def model_size_bytes(model):
    """Bytes of a model's parameters and buffers, with ``QuantizedLinear`` layers at their
    format's (packed) cost. Tensors shared between modules (tied embeddings) count once."""
    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            total += module.memory
            seen.update(id(t) for t in (module.weight_quantized, module.weight_scale, module.bias)
                        if t is not None)
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total
