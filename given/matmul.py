"""Two matrix products that LLM.int8() needs and plain ``@`` gets wrong (given code).

- ``int8_matmul_int32``: int8 @ int8 accumulated exactly in int32 (``@`` on int8 wraps around).
- ``int32_to_float32_in_place``: the int32 product converted to float32 in its own memory (no
  second output-sized buffer).
- ``fp16_matmul``: a product with both operands in fp16 precision, also on CPUs without fp16
  arithmetic.
"""
import functools

import torch

from given.timing import time_interleaved

FP16_MAX = torch.finfo(torch.float16).max  # 65504


def int8_matmul_int32(a, b):
    """Exact product of two int8 matrices, accumulated in int32.

    Beware: ``a @ b`` on two int8 tensors returns *int8* on CPU and silently wraps around
    (127 * 127 = 16129 does not fit in 8 bits). This helper picks the fastest *exact* way the
    machine has:

    - ``torch._int_mm``, an int8 GEMM with int32 accumulation (tensor cores on CUDA;
      AVX512-VNNI / AMX on recent CPUs, where it is several times faster than float32);
    - on CPUs where ``torch._int_mm`` has no fast kernel (AVX2 only: it then runs a plain loop,
      tens of times slower than float32), a float32 GEMM of the int8 values, in blocks of at most
      1024 terms: every partial sum is an integer below 1024 * 128^2 = 2^24, which float32 holds
      exactly, and the blocks are added in int32;
    - else float64, exact for int8 products with fewer than 2^38 terms.

    Args:
        a: int8 (m, k). b: int8 (k, n).
    Returns:
        int32 (m, n), exactly ``sum_k a[i, k] * b[k, j]``.
    """
    if a.device.type == "cpu" and a.device == b.device and not int_mm_is_fast_on_cpu():
        return _int8_matmul_via_float32(a, b)
    if _int_mm_supported(a, b):
        if a.device.type == "cpu" and b.stride(0) != 1:
            b = b.T.contiguous().T  # column-major: the layout the CPU int8 kernel reads fastest
        return torch._int_mm(a, b)
    return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)


def int32_to_float32_in_place(accumulated):
    """``accumulated.to(torch.float32)``, written over ``accumulated``'s own memory.

    int32 and float32 both take 4 bytes, so each value can be converted where it stands. An
    int8 GEMM's output has tokens x out values (BERT-base: 2048 x 3072, 25 MB); ``.to`` writes
    the float32 copy into a second buffer that size, and a fresh buffer costs a page fault per
    4 KiB the first time it is written, often more than the conversion itself. Same values as
    ``.to(torch.float32)`` (integers above 2^24 round to the nearest float32, as there).

    Args:
        accumulated: int32 tensor. It is used up: afterwards its memory holds float32 values, so
            read only the returned tensor. Anything else (another dtype, a non-contiguous view)
            is converted with ``.to(torch.float32)`` into a new tensor, and left unchanged.
    Returns:
        float32 tensor of ``accumulated``'s shape.
    """
    if accumulated.dtype != torch.int32 or not accumulated.is_contiguous():
        return accumulated.to(torch.float32)
    # Each element is read and written at the same address, so the overlap is harmless.
    return accumulated.view(torch.float32).copy_(accumulated)


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


FLOAT32_EXACT_TERMS = 2 ** 24 // 128 ** 2
"""1024 products of int8 values (each at most 128^2 in magnitude) sum exactly in float32."""


def _int8_matmul_via_float32(a, b):
    """``int8_matmul_int32`` as float32 GEMMs over blocks of ``FLOAT32_EXACT_TERMS`` terms (exact)."""
    a, b = a.to(torch.float32), b.to(torch.float32)
    k = a.shape[1]
    if k <= FLOAT32_EXACT_TERMS:
        return (a @ b).to(torch.int32)
    result = torch.zeros(a.shape[0], b.shape[1], dtype=torch.int32, device=a.device)
    for start in range(0, k, FLOAT32_EXACT_TERMS):
        block = slice(start, start + FLOAT32_EXACT_TERMS)
        result += (a[:, block] @ b[block]).to(torch.int32)
    return result


INT_MM_FAST_ENOUGH = 2.0
"""``torch._int_mm`` is used on a CPU only where it measured at least this many times faster than
float32: a VNNI or AMX kernel measures 3-10x; the plain loop of an AVX2-only CPU ~0.02x on a quiet
machine, but up to ~0.9x while other processes hold the cores (float32's threads wait too)."""

SPEED_CHECK_SHAPE = (256, 768, 768)
"""(m, k, n) of the product ``int_mm_speed_vs_float32`` decides on: (tokens, 768) @ (768, 768), a
BERT-base attention projection. Smaller products measure the per-call costs more than the kernel:
at 128x512 @ 512x256 an AMX Xeon measured 1.9x-4.2x from run to run on two threads, once below
``INT_MM_FAST_ENOUGH`` (every int8 product then went through float32, 5x slower than its kernel);
at this shape the same CPU measured 5.6x-7.3x."""
QUICK_CHECK_SHAPE = (128, 512, 256)
"""A product 9x smaller, timed first: a plain loop (AVX2 only, ~0.02x float32) shows there already,
and is not run on the larger product (an estimated second of plain loop)."""


def int_mm_is_fast_on_cpu():
    """Whether ``torch._int_mm`` is clearly faster than a float32 GEMM of the same size on this CPU
    (measured once, ``INT_MM_FAST_ENOUGH``): a wrong "yes" would run every int8 product in a plain
    loop, tens of times slower than float32; a wrong "no" would multiply in float32 where an int8
    kernel is several times faster."""
    return int_mm_speed_vs_float32() > INT_MM_FAST_ENOUGH


@functools.lru_cache(maxsize=None)
def int_mm_speed_vs_float32():
    """``_int_mm_speed_at(SPEED_CHECK_SHAPE)``, or ``_int_mm_speed_at(QUICK_CHECK_SHAPE)`` where
    ``torch._int_mm`` is already slower than float32 on that one; 0 without ``torch._int_mm``."""
    if not hasattr(torch, "_int_mm"):
        return 0.0
    quick = _int_mm_speed_at(*QUICK_CHECK_SHAPE)
    return quick if quick < 1.0 else _int_mm_speed_at(*SPEED_CHECK_SHAPE)


def _int_mm_speed_at(m, k, n):
    """float32 GEMM time / ``torch._int_mm`` time for random int8 (m, k) @ (k, n) operands, each its
    fastest of three interleaved rounds (``given.timing``)."""
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8)
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8).T  # column-major, as int8_matmul_int32 passes it
    af, bf = a.to(torch.float32), b.to(torch.float32)

    stats = time_interleaved({"float32": lambda: af @ bf, "int8": lambda: torch._int_mm(a, b)}, warmup=1, repeats=3)
    return stats["float32"]["min"] / stats["int8"]["min"]


def fp16_matmul(a, b, add_to=None):
    """``a @ b`` with both operands in fp16 precision; float32 result.

    On CUDA this is a real fp16 matmul. Many CPUs have no fp16 arithmetic (there an fp16 matmul
    of BERT-base size can take minutes), so on CPU the operands are *rounded* to fp16 and then
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
