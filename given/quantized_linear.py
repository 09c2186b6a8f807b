"""Your Exercise 1 quantization inside a real BERT (given code).

``QuantizedLinear`` replaces an ``nn.Linear``: its weight is stored quantized once, with your
functions, and its forward pass runs LLM.int8() (format "int8") or multiplies by the dequantized
weight (the other formats). ``quantize_model`` swaps every Linear layer of a model.
"""
import torch
from torch import nn

from given.checks import check_threshold
from given.quantized_vector import QuantizedVector, check_format, dequantize
from given.sizes import packed_bytes


class QuantizedLinear(nn.Module):
    """A drop-in replacement for ``nn.Linear`` whose weight is stored quantized once.

    - "int8": int8 weight with one scale per output feature, quantized once at construction (as
      bitsandbytes does). The forward pass is *your* LLM.int8(): ``mixed_precision_forward``
      (Exercise 1.8) with the stored weight handed over as a ``QuantizedVector(w, "int8", dim=0)``,
      so your ``outlier_columns`` (1.6) picks the outlier columns and your
      ``int8_vectorwise_matmul`` (1.7) quantizes the activations and multiplies. The outlier rows
      of the weight are its dequantized int8 values, so only int8 is stored.
    - "fp16", "1bit", "1.58bit": forward multiplies by the dequantized weight (weight-only
      quantization; the activations stay in float32). Scales are per output feature.

    ``last_outlier_count`` holds how many outlier columns the last int8 forward saw, so the
    notebook can show where LLM.int8()'s outliers live. The bias stays in float32.
    """

    def __init__(self, linear, quantization_format="int8", threshold=6.0):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        check_format(quantization_format)
        self.threshold = check_threshold(threshold)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight_in_out = linear.weight.detach().T.to(torch.float32)  # (in, out), as in the lab
        quantized = QuantizedVector(weight_in_out, quantization_format,
                                    dim=None if quantization_format == "fp16" else 0)
        self.quantization_format = quantization_format
        # Stored (out, in), row after row of nn.Linear; .T gives the lab's (in, out) as a view.
        self.register_buffer("weight_quantized", quantized.quantized_vector.T.contiguous())
        self.register_buffer("weight_scale", quantized.alpha)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)
        self._packed_bytes = quantized.memory_bytes() + (0 if self.bias is None else 4 * self.bias.numel())
        self.last_outlier_count = 0

    def packed_bytes(self):
        """Bytes of this layer with its values packed in its format (``given.sizes``)."""
        return self._packed_bytes

    def quantized_weight(self):
        """The stored weight as a ``QuantizedVector`` of the (in, out) weight (a view, no copy)."""
        return QuantizedVector.from_quantized(self.weight_quantized.T, self.weight_scale,
                                              self.quantization_format,
                                              dim=None if self.quantization_format == "fp16" else 0)

    def dequantized_weight(self):
        """The float32 (in, out) weight this layer multiplies by."""
        return dequantize(self.weight_quantized.T, self.weight_scale, self.quantization_format)

    def forward(self, x):
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            raise TypeError(f"QuantizedLinear expects a floating-point input tensor, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        *leading, in_features = x.shape
        if in_features != self.in_features:
            raise ValueError(f"input has {in_features} features, this layer takes {self.in_features}")
        x2d = x.reshape(-1, in_features).to(torch.float32)
        if self.quantization_format == "int8":
            out = self._llm_int8(x2d)
        else:
            out = x2d @ self.dequantized_weight()
        if self.bias is not None:
            out = out.add_(self.bias) if out.is_contiguous() else out + self.bias
        return out.reshape(*leading, self.out_features).to(x.dtype)

    def _llm_int8(self, x):
        """Your ``mixed_precision_forward`` on the stored int8 weight; counts the outlier columns."""
        from quantization import mixed_precision_forward, outlier_columns

        if x.shape[0]:
            self.last_outlier_count = int(outlier_columns(x, self.threshold).sum())
        return mixed_precision_forward(x, self.quantized_weight(), self.threshold)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"format={self.quantization_format!r}, threshold={self.threshold}")


def quantize_model(model, quantization_format="int8", threshold=6.0, skip=(), quantize_tied=False):
    """Replace every ``nn.Linear`` of ``model`` (in place) by a ``QuantizedLinear``.

    Args:
        model: any ``nn.Module``, e.g. a Hugging Face ``BertForMaskedLM``.
        quantization_format: one of ``QUANTIZATION_FORMATS``.
        threshold: LLM.int8() outlier threshold for "int8".
        skip: a name, or names, of Linear layers (or of modules holding them) to keep in float,
            e.g. ``"cls"`` or ``("cls", "bert.encoder.layer.0")``. Each must match a module.
        quantize_tied: Linear layers whose weight is tied to another module (BERT's MLM decoder
            shares the word embedding) stay in float by default, as in transformers'
            bitsandbytes integration: a quantized copy *adds* memory, since the embedding keeps
            the float original. ``True`` gives each of them its own quantized copy anyway (BERT's
            decoder, 768 x 30522, is about a fifth of BERT-base's compute at 128 tokens, so it
            caps the speed-up while it stays float); the size returned counts that copy *and*
            the float embedding it was tied to.

    Returns:
        ``(model, size_bytes)``: the same model object, and its ``given.sizes.packed_bytes``
        (1bit and 1.58bit values counted packed; everything else as stored).
    """
    check_format(quantization_format)
    check_threshold(threshold)
    if not isinstance(quantize_tied, bool):
        raise TypeError(f"quantize_tied must be True or False, got {quantize_tied!r}")
    skip = _skip_names(model, skip)
    tied = set() if quantize_tied else _tied_parameter_ids(model)
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and id(module.weight) not in tied
               and not any(name == s or name.startswith(s + ".") for s in skip)]
    if not targets:
        raise ValueError("the model has no nn.Linear layer to quantize (after skip)")
    for name, linear in targets:
        model.set_submodule(name, QuantizedLinear(linear, quantization_format, threshold))
    return model, packed_bytes(model)


def _skip_names(model, skip):
    """``skip`` as a tuple of module names, each checked to exist in ``model``."""
    names = (skip,) if isinstance(skip, str) else tuple(skip)
    present = dict(model.named_modules())
    unknown = [name for name in names if not isinstance(name, str) or name not in present]
    if unknown:
        raise ValueError(f"skip names {unknown} match no module of the model; use module names "
                         f"as in model.named_modules(), e.g. 'cls' or 'bert.encoder.layer.0'")
    return names


def _tied_parameter_ids(model):
    """ids of parameters that more than one module holds (e.g. tied input/output embeddings)."""
    owners = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for parameter in module.parameters(recurse=False):
            owners.setdefault(id(parameter), set()).add(id(module))
    return {pid for pid, modules in owners.items() if len(modules) > 1}
