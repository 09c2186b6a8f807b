"""Your Exercise 1 quantization inside a real BERT (given code).

``QuantizedLinear`` replaces an ``nn.Linear``: its weight is stored quantized once, with your
functions, and its forward pass runs LLM.int8() (format "int8") or multiplies by the dequantized
weight (the other formats). ``quantize_model`` swaps every Linear layer of a model.
"""
import types

import torch
from torch import nn

from given import your_code
from given.checks import check_threshold
from given.matmul import fp16_matmul, int32_to_float32_in_place, int8_matmul_int32
from given.sizes import packed_bytes
from given.timing import _summary, time_interleaved


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
    notebook can show where LLM.int8()'s outliers live: the columns your
    ``mixed_precision_forward`` found with your ``outlier_columns``, recorded as it calls it (the
    columns are searched once per call, not a second time to count them). The bias stays in
    float32.
    """

    def __init__(self, linear, quantization_format="int8", threshold=6.0):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        your_code.quantization.check_format(quantization_format)
        self.threshold = check_threshold(threshold)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight_in_out = linear.weight.detach().T.to(torch.float32)  # (in, out), as in the lab
        dim = None if quantization_format == "fp16" else 0
        quantized = your_code.quantization.QuantizedVector(weight_in_out, quantization_format, dim=dim)
        self.quantization_format = quantization_format
        # Stored (out, in) like nn.Linear; .T is the lab's (in, out) as a column-major view,
        # the layout torch._int_mm reads fastest.
        self.register_buffer("weight_quantized", quantized.quantized_vector.T.contiguous())
        self.register_buffer("weight_scale", quantized.alpha)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)
        self._packed_bytes = quantized.memory_bytes() + (0 if self.bias is None else 4 * self.bias.numel())
        self._last_outliers = None  # the (in,) bool mask of the last int8 forward

    def packed_bytes(self):
        """Bytes of this layer with its values packed in its format (``given.sizes``)."""
        return self._packed_bytes

    def quantized_weight(self):
        """The stored weight as a ``QuantizedVector`` of the (in, out) weight (a view, no copy)."""
        dim = None if self.quantization_format == "fp16" else 0
        return your_code.quantization.QuantizedVector.from_quantized(
            self.weight_quantized.T, self.weight_scale, self.quantization_format, dim=dim)

    def dequantized_weight(self):
        """The float32 (in, out) weight this layer multiplies by."""
        return your_code.quantization.dequantize(self.weight_quantized.T, self.weight_scale, self.quantization_format)

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

    @property
    def last_outlier_count(self):
        """How many outlier columns the last int8 forward found (0 before the first one)."""
        return 0 if self._last_outliers is None else int(self._last_outliers.sum())

    def _llm_int8(self, x):
        """Your ``mixed_precision_forward`` on the stored int8 weight; keeps the outlier mask it found."""
        yours = your_code.quantization
        forward, found = _recording_outlier_columns(yours.mixed_precision_forward, yours.outlier_columns)
        out = forward(x, self.quantized_weight(), self.threshold)
        if found:
            self._last_outliers = found[0]
        elif x.shape[0]:  # a forward that finds its outliers without outlier_columns: search once more
            self._last_outliers = yours.outlier_columns(x, self.threshold)
        return out

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"format={self.quantization_format!r}, threshold={self.threshold}")


def _recording_outlier_columns(forward, outlier_columns):
    """``forward`` (your ``mixed_precision_forward``) running with a recording ``outlier_columns``.

    Returns ``(recording_forward, found)``: a copy of ``forward`` whose global name
    ``outlier_columns`` calls yours and appends each mask it returns to the list ``found``. Only
    the copy's globals change (your module is untouched, so this is safe with several threads).
    A ``forward`` that is not a plain function of your module comes back as it is (nothing
    recorded).
    """
    found = []
    module_globals = getattr(forward, "__globals__", None)
    if not isinstance(forward, types.FunctionType) or module_globals.get("outlier_columns") is not outlier_columns:
        return forward, found

    def recording_outlier_columns(*args, **kwargs):
        mask = outlier_columns(*args, **kwargs)
        found.append(mask)
        return mask

    recording = types.FunctionType(forward.__code__, {**module_globals, "outlier_columns": recording_outlier_columns},
                                   forward.__name__, forward.__defaults__, forward.__closure__)
    recording.__kwdefaults__ = forward.__kwdefaults__
    return recording, found


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
    your_code.quantization.check_format(quantization_format)
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


GEMM_STEP = "4. int8 GEMM, int32 accumulation"
WHOLE_CALL = "your mixed_precision_forward (all steps)"
FP32_MATMUL = "float32 matmul x @ W"
AROUND_THE_GEMM = "work around the GEMM (whole call - GEMM)"


def breakdown_data(tokens=2048, in_features=768, out_features=3072, outlier_features=2, seed=0):
    """The seeded data of ``time_breakdown``: activations (tokens, in_features) whose first
    ``outlier_features`` columns hold outliers (x15: |x| up to ~60), and a float32 weight
    (in_features, out_features)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, in_features, generator=generator)
    x[:, :outlier_features] *= 15.0
    weight = torch.randn(in_features, out_features, generator=generator) / in_features ** 0.5
    return x, weight


def llm_int8_steps(x, w_q, threshold=6.0):
    """LLM.int8() on a weight quantized once, as six separately callable steps.

    The reference solution's steps, each calling your Exercise 1 functions where the lab asks
    for them: outlier columns zeroed in ``x`` (the whole stored weight, no copy of its rows), the
    int32 product dequantized in place. Returns ``(steps, result)``: ``{label: function}`` (each
    step on the previous steps' outputs, computed once here) and the result of running them in
    order, float32 (tokens, out), the same numbers as the reference ``mixed_precision_forward``.
    """
    yours = your_code.quantization
    is_outlier = yours.outlier_columns(x, threshold)
    keep = ~is_outlier
    x_regular = x * keep
    x_q = yours.QuantizedVector(x_regular, "int8", dim=1)
    accumulated = int8_matmul_int32(x_q.quantized_vector, w_q.quantized_vector)
    outlier_x, outlier_rows = x[:, is_outlier], w_q[is_outlier].dequantize()

    def dequantize(product):
        return int32_to_float32_in_place(product).div_(x_q.alpha).div_(w_q.alpha)

    result = dequantize(accumulated.clone())
    scratch = accumulated.clone()  # step 5 alone converts it again and again: only its time counts
    if is_outlier.any():
        fp16_matmul(outlier_x, outlier_rows, add_to=result)
    sink = result.clone()  # step 6 alone adds to it, as it adds to the result in the whole call
    steps = {
        "1. find the outlier columns (your 1.6)": lambda: yours.outlier_columns(x, threshold),
        "2. zero them in x (W whole, no copy)": lambda: x * keep,
        "3. quantize x per row (your 1.1)": lambda: yours.QuantizedVector(x_regular, "int8", dim=1),
        GEMM_STEP: lambda: int8_matmul_int32(x_q.quantized_vector, w_q.quantized_vector),
        "5. dequantize in place: to float32, / row, / column scales": lambda: dequantize(scratch),
        "6. fp16 outlier product, added": lambda: fp16_matmul(outlier_x, outlier_rows, add_to=sink),
    }
    return steps, result


def time_breakdown(tokens=2048, in_features=768, out_features=3072, outlier_features=2, threshold=6.0,
                   repeats=10, seed=0, show=True):
    """Where the time of LLM.int8() goes: each step (``llm_int8_steps``) timed alone, and your
    whole ``mixed_precision_forward``.

    The steps run on the same seeded data as a ``QuantizedLinear`` sees it (``breakdown_data``, a
    weight quantized once). All steps, your whole ``mixed_precision_forward`` and the float32
    matmul are timed in the same interleaved rounds (``given.timing.time_interleaved``).

    The work *around* the int8 GEMM is measured per round as (your whole call - the GEMM alone) /
    the float32 matmul: what your code adds to the one step that an int8 kernel makes fast. It
    includes what no step timed alone shows (fresh buffers, their first touch). With
    ``show=True`` it is printed as one line, ``around the int8 GEMM: N x fp32``.

    Returns:
        a pandas DataFrame, one row per step plus the whole call, the float32 matmul and the work
        around the GEMM: ``median ms``, ``q1 ms``, ``q3 ms``, ``% of steps`` (share of the steps'
        summed medians) and ``x fp32 matmul`` (per-round ratio to the float32 matmul: median;
        its quartiles are ``q1 x`` and ``q3 x``).
    """
    import pandas as pd

    yours = your_code.quantization
    x, weight = breakdown_data(tokens, in_features, out_features, outlier_features, seed)
    w_q = yours.QuantizedVector(weight, "int8", dim=0)
    steps, _ = llm_int8_steps(x, w_q, threshold)
    whole = {WHOLE_CALL: lambda: yours.mixed_precision_forward(x, w_q, threshold), FP32_MATMUL: lambda: x @ weight}
    with torch.inference_mode():
        stats = time_interleaved({**steps, **whole}, warmup=2, repeats=repeats)
    fp32_times = stats[FP32_MATMUL]["times"]
    stats[AROUND_THE_GEMM] = _summary([whole_t - gemm_t for whole_t, gemm_t
                                       in zip(stats[WHOLE_CALL]["times"], stats[GEMM_STEP]["times"])])
    step_total = sum(stats[label]["median"] for label in steps)
    rows = {}
    for label, s in stats.items():
        ratios = _summary([t / fp32 for t, fp32 in zip(s["times"], fp32_times)])
        rows[label] = {"median ms": 1000 * s["median"], "q1 ms": 1000 * s["q1"], "q3 ms": 1000 * s["q3"],
                       "% of steps": 100 * s["median"] / step_total if label in steps else float("nan"),
                       "x fp32 matmul": ratios["median"], "q1 x": ratios["q1"], "q3 x": ratios["q3"]}
    table = pd.DataFrame.from_dict(rows, orient="index")
    outliers = int(yours.outlier_columns(x, threshold).sum())
    table.index.name = (f"x {tokens}x{in_features} ({outliers} outlier columns) @ W "
                        f"{in_features}x{out_features}, {torch.get_num_threads()} thread(s)")
    if show:
        print(around_line(table))
    return table


def around_line(table):
    """The one line that sums up a ``time_breakdown`` table."""
    around = table.loc[AROUND_THE_GEMM]
    steps = table["% of steps"].notna()  # the rows of the six steps
    steps_alone = table.loc[steps & (table.index != GEMM_STEP), "x fp32 matmul"].sum()
    return (f"around the int8 GEMM: {around['x fp32 matmul']:.2f} x fp32 "
            f"[IQR {around['q1 x']:.2f}-{around['q3 x']:.2f}] (your whole call minus the GEMM alone; "
            f"the other steps timed alone sum to {steps_alone:.2f} x)")


def breakdown_summary(table):
    """What a ``time_breakdown`` table measured, in sentences that quote it (for the notebook).

    Each time is compared with the float32 matmul of the same run, round by round: "faster" or
    "slower" only when the quartiles of the per-round ratio are both below or both above 1.
    """
    def compared(label):
        row = table.loc[label]
        if row["q3 x"] < 1:
            verdict = "faster than it"
        elif row["q1 x"] > 1:
            verdict = "slower than it"
        else:
            verdict = "not distinguishable from it (the spread includes 1.00)"
        return (f"{row['x fp32 matmul']:.2f}x the float32 matmul's time [IQR {row['q1 x']:.2f}-"
                f"{row['q3 x']:.2f}]: {verdict}")

    steps = table["% of steps"].dropna()
    return "\n".join([
        f"On this machine the int8 GEMM alone (step 4) takes {compared(GEMM_STEP)}.",
        f"Your whole mixed_precision_forward takes {compared(WHOLE_CALL)}.",
        around_line(table) + ".",
        f"The largest step is {steps.idxmax()!r}: {steps.max():.0f}% of the steps' summed time.",
    ])
