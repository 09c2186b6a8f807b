"""Your Exercise 1 quantization inside a real BERT (given code).

``QuantizedLinear`` replaces an ``nn.Linear``: its weight is stored quantized once, with your
functions, and its forward pass runs LLM.int8() (format "int8") or multiplies by the dequantized
weight (the other formats). ``quantize_model`` swaps every Linear layer of a model.
"""
import torch
from torch import nn

from given.checks import check_threshold
from given.matmul import fp16_matmul, int8_matmul_int32
from given.quantized_vector import QuantizedVector, check_format, dequantize
from given.sizes import packed_bytes
from given.timing import time_interleaved


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
        # Stored (out, in) like nn.Linear; .T is the lab's (in, out) as a column-major view,
        # the layout torch._int_mm reads fastest.
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


def time_breakdown(tokens=2048, in_features=768, out_features=3072, outlier_features=2, threshold=6.0,
                   repeats=10, seed=0):
    """Where the time of LLM.int8() goes: each step of ``mixed_precision_forward`` timed alone.

    The steps run on the same seeded data as a ``QuantizedLinear`` sees it (activations
    (tokens, in_features) with ``outlier_features`` outlier columns, a weight quantized once), and
    each step calls your Exercise 1 functions where the lab asks for them. All steps, your whole
    ``mixed_precision_forward`` and the float32 matmul are timed in the same interleaved rounds
    (``given.timing.time_interleaved``).

    Returns:
        a pandas DataFrame, one row per step: ``median ms``, ``q1 ms``, ``q3 ms``, ``% of steps``
        (share of the steps' summed medians) and ``x fp32 matmul`` (median / float32 median).
    """
    import pandas as pd

    from quantization import mixed_precision_forward, outlier_columns

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, in_features, generator=generator)
    x[:, :outlier_features] *= 15.0
    weight = torch.randn(in_features, out_features, generator=generator) / in_features ** 0.5
    w_q = QuantizedVector(weight, "int8", dim=0)
    is_outlier = outlier_columns(x, threshold)
    x_regular, w_regular = x[:, ~is_outlier], w_q[~is_outlier]
    x_q = QuantizedVector(x_regular, "int8", dim=1)
    accumulated = int8_matmul_int32(x_q.quantized_vector, w_regular.quantized_vector)
    result = accumulated.to(torch.float32) / (x_q.alpha * w_q.alpha)
    w_outlier_rows = w_q[is_outlier].dequantize()

    steps = {
        "1. find the outlier columns (your 1.6)": lambda: outlier_columns(x, threshold),
        "2. cut them out of x, and the rows of W": lambda: (x[:, ~is_outlier], w_q[~is_outlier]),
        "3. quantize x per row (your 1.1)": lambda: QuantizedVector(x_regular, "int8", dim=1),
        "4. int8 GEMM, int32 accumulation": lambda: int8_matmul_int32(x_q.quantized_vector,
                                                                      w_regular.quantized_vector),
        "5. dequantize: int32 -> float32, / scales": lambda: accumulated.to(torch.float32)
                                                              / (x_q.alpha * w_q.alpha),
        "6. fp16 outlier product, added": lambda: fp16_matmul(x[:, is_outlier], w_outlier_rows,
                                                             add_to=result),
    }
    whole = {"your mixed_precision_forward (all steps)": lambda: mixed_precision_forward(x, w_q, threshold),
             "float32 matmul x @ W": lambda: x @ weight}
    with torch.inference_mode():
        stats = time_interleaved({**steps, **whole}, warmup=2, repeats=repeats)
    step_total = sum(stats[label]["median"] for label in steps)
    fp32 = stats["float32 matmul x @ W"]["median"]
    rows = {label: {"median ms": 1000 * s["median"], "q1 ms": 1000 * s["q1"], "q3 ms": 1000 * s["q3"],
                    "% of steps": 100 * s["median"] / step_total if label in steps else float("nan"),
                    "x fp32 matmul": s["median"] / fp32}
            for label, s in stats.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = (f"x {tokens}x{in_features} ({int(is_outlier.sum())} outlier columns) @ W "
                        f"{in_features}x{out_features}, {torch.get_num_threads()} thread(s)")
    return table
