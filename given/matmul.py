"""Two matrix products that LLM.int8() needs and plain ``@`` gets wrong (given code).

- ``int8_matmul_int32``: int8 @ int8 accumulated exactly in int32 (``@`` on int8 wraps around).
- ``fp16_matmul``: a product with both operands in fp16 precision, also on CPUs without fp16
  arithmetic.
"""
import torch

FP16_MAX = torch.finfo(torch.float16).max  # 65504


def int8_matmul_int32(a, b):
    """Exact product of two int8 matrices, accumulated in int32.

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
