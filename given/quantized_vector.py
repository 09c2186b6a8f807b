"""``QuantizedVector``: one object per quantized tensor, built on your Exercise 1 functions (given).

It calls *your* ``absmax_quantize``, ``fp16_quantize``, ``binary_quantize`` and
``ternary_quantize`` (from ``quantization.py``) to quantize, and the matching inverse to
dequantize, so it works as soon as those exercises do.
"""
import importlib

import torch

from given.checks import check_dim, check_floating_tensor
from given.sizes import packed_values_bytes

QUANTIZATION_FORMATS = ("int8", "fp16", "1bit", "1.58bit")


def _exercise_functions():
    """Your Exercise 1 module, imported when first needed: ``quantization.py`` itself imports this
    module, so importing it at the top would be circular."""
    return importlib.import_module("quantization")


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
        exercise = _exercise_functions()
        v = self.original_vector.detach().to(torch.float32)
        if self.quantization_format == "int8":
            self.quantized_vector, self.alpha = exercise.absmax_quantize(v, self.dim)
        elif self.quantization_format == "fp16":
            self.quantized_vector, self.alpha = exercise.fp16_quantize(v), None
        elif self.quantization_format == "1bit":
            self.quantized_vector, self.alpha = exercise.binary_quantize(v, self.dim)
        else:
            self.quantized_vector, self.alpha = exercise.ternary_quantize(v, self.dim)
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
    exercise = _exercise_functions()
    if quantization_format == "int8":
        return exercise.absmax_dequantize(q, scale)
    if quantization_format == "fp16":
        return q.to(torch.float32)
    return exercise.scaled_dequantize(q, scale)
