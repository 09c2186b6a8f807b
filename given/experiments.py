"""Controlled experiments on a BERT (given code): ablations, sweeps, scans and shares.

Each function changes one thing at a time and measures what that one change costs, on the same
fixed evaluation set as every row of the notebook's table:

- ``PerTensorInt8Linear`` / ``quantize_model_per_tensor``: int8 with *one* scale for the whole
  activation and one for the whole weight, no outlier decomposition (what the LLM.int8()
  ablation compares your vector-wise int8 with).
- ``sparsity_curve``: perplexity against sparsity for local, global and structured pruning.
- ``layer_sensitivity``: prune one encoder Linear layer at a time, everything else untouched.
- ``component_shares``: how much of the size and of the time the embeddings, the encoder and
  the masked-LM head take (Amdahl's law: what a technique does not touch limits what it can win).
"""
import copy

import torch
from torch import nn

from given import your_code
from given.bert_surgery import shrink_bert
from given.checks import check_fraction
from given.evaluation import MaskedEvalSet, masked_lm_perplexity
from given.matmul import int8_matmul_int32
from given.pruning_tools import sparsity
from given.quantized_linear import _tied_parameter_ids
from given.sizes import stored_tensors
from given.timing import clock
from given.torch_utils import apply_mask, matching_modules

PRUNING_METHODS = ("local", "global", "structured")


def first_windows(eval_set, count):
    """The first ``count`` windows of ``eval_set`` as a smaller ``MaskedEvalSet`` (same masks).

    Sweeps evaluate dozens of models: a prefix of the fixed set keeps them affordable and still
    scores every model on exactly the same tokens.
    """
    if not 1 <= count:
        raise ValueError(f"count must be >= 1, got {count}")
    count = min(count, len(eval_set))
    return MaskedEvalSet(eval_set.input_ids[:count], eval_set.attention_mask[:count],
                         eval_set.labels[:count])


# ----------------------------------------------------------------------------------------------
# LLM.int8() ablation: one scale per tensor, no decomposition
# ----------------------------------------------------------------------------------------------

class PerTensorInt8Linear(nn.Module):
    """An ``nn.Linear`` in int8 with one absmax scale for the whole weight and, at every call,
    one for the whole activation matrix; no outlier decomposition.

    This is the simplest dynamic int8 scheme (``torch.ao``'s dynamic quantization also uses one
    scale per activation tensor). Built on your ``absmax_quantize`` (``dim=None``) through
    ``QuantizedVector``, with the same exact int32 product as your LLM.int8().
    """

    def __init__(self, linear):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight_in_out = linear.weight.detach().T.to(torch.float32)
        quantized = your_code.quantization.QuantizedVector(weight_in_out, "int8", dim=None)
        self.register_buffer("weight_quantized", quantized.quantized_vector.T.contiguous())  # (out, in)
        self.register_buffer("weight_scale", torch.as_tensor(quantized.alpha, dtype=torch.float32))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)

    def forward(self, x):
        *leading, in_features = x.shape
        x2d = x.reshape(-1, in_features).to(torch.float32)
        x_q = your_code.quantization.QuantizedVector(x2d, "int8", dim=None)  # one scale for every token and feature
        accumulated = int8_matmul_int32(x_q.quantized_vector, self.weight_quantized.T)
        out = accumulated.to(torch.float32) / (x_q.alpha * self.weight_scale)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*leading, self.out_features).to(x.dtype)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, scales=per-tensor"


def quantize_model_per_tensor(model):
    """Swap every ``nn.Linear`` of ``model`` (in place) for a ``PerTensorInt8Linear``.

    The same layers as ``quantize_model``: a Linear whose weight is tied to another module (BERT's
    MLM decoder shares the word embeddings) stays in float. Returns ``model``.
    """
    tied = _tied_parameter_ids(model)
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and id(module.weight) not in tied]
    if not targets:
        raise ValueError("the model has no nn.Linear layer to quantize")
    for name, linear in targets:
        model.set_submodule(name, PerTensorInt8Linear(linear))
    return model


# ----------------------------------------------------------------------------------------------
# Pruning: perplexity against sparsity, and one layer at a time
# ----------------------------------------------------------------------------------------------

def encoder_linear_weights(model):
    """Entries of all ``nn.Linear`` weights in ``model.bert.encoder``."""
    return sum(module.weight.numel() for _, module in matching_modules(model.bert.encoder, nn.Linear))


def prune_copy(model, method, fraction):
    """A pruned deep copy of a ``BertForMaskedLM`` and the fraction of encoder Linear weights
    it removed (zeroed for "local"/"global", cut out for "structured").

    - "local": ``apply_weight_pruning(encoder, nn.Linear, fraction)``, the same fraction per layer.
    - "global": the same, ranking all encoder Linear weights together.
    - "structured": ``shrink_bert(model, fraction)``, that fraction of FFN neurons and heads.
    """
    apply_weight_pruning = your_code.pruning.apply_weight_pruning  # your Exercise 2

    if method not in PRUNING_METHODS:
        raise ValueError(f"method must be one of {PRUNING_METHODS}, got {method!r}")
    check_fraction(fraction, "fraction")
    pruned = copy.deepcopy(model)
    if fraction == 0:
        return pruned, 0.0
    if method == "structured":
        before = encoder_linear_weights(pruned)
        shrink_bert(pruned, fraction)
        return pruned, 1 - encoder_linear_weights(pruned) / before
    apply_weight_pruning(pruned.bert.encoder, nn.Linear, fraction, scope=method)
    return pruned, sparsity(pruned.bert.encoder, nn.Linear)


def sparsity_curve(model, eval_set, fractions, methods=PRUNING_METHODS, *, batch_size=32):
    """Masked-LM perplexity of ``model`` pruned by each method at each fraction.

    Returns:
        A pandas DataFrame with one row per (method, fraction): ``method``, ``fraction`` (asked),
        ``removed`` (fraction of encoder Linear weights actually zeroed or removed),
        ``perplexity``. A fraction the method cannot reach (structured pruning that would remove
        every head of a layer) is skipped with a message.
    """
    import pandas as pd

    rows = []
    for method in methods:
        for fraction in fractions:
            try:
                pruned, removed = prune_copy(model, method, fraction)
            except ValueError as error:  # e.g. structured pruning that would remove every head of a layer
                print(f"sparsity_curve: {method} at {fraction:g} skipped: {error}")
                continue
            perplexity = masked_lm_perplexity(pruned, eval_set, batch_size=batch_size)["perplexity"]
            rows.append({"method": method, "fraction": fraction, "removed": removed, "perplexity": perplexity})
            del pruned
    return pd.DataFrame(rows)


def layer_sensitivity(model, eval_set, fraction, *, batch_size=32):
    """Prune one encoder ``nn.Linear`` at a time by ``fraction`` (your ``magnitude_mask``) and
    measure the perplexity; every other layer keeps its weights.

    The model is changed and restored layer by layer (no copies): it is unchanged on return.

    Returns:
        A pandas DataFrame, one row per Linear layer: ``layer`` (encoder layer index), ``module``
        (e.g. ``attention.self.query``), ``weights``, ``perplexity``.
    """
    import pandas as pd
    magnitude_mask = your_code.pruning.magnitude_mask  # your Exercise 2

    check_fraction(fraction, "fraction")
    rows = []
    for name, linear in matching_modules(model.bert.encoder, nn.Linear):
        layer_index, module_name = name.removeprefix("layer.").split(".", 1)
        original = linear.weight.detach().clone()
        try:
            apply_mask(linear, magnitude_mask(linear.weight.detach(), fraction))
            perplexity = masked_lm_perplexity(model, eval_set, batch_size=batch_size)["perplexity"]
        finally:
            with torch.no_grad():
                linear.weight.copy_(original)
        rows.append({"layer": int(layer_index), "module": module_name, "weights": original.numel(),
                     "perplexity": perplexity})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# Amdahl: where the bytes and the time are
# ----------------------------------------------------------------------------------------------

def bert_components(model):
    """The three parts of a ``BertForMaskedLM`` that techniques touch differently:
    ``{"embeddings": ..., "encoder": ..., "MLM head": ...}``."""
    return {"embeddings": model.bert.embeddings, "encoder": model.bert.encoder, "MLM head": model.cls}


def component_bytes(parts):
    """Bytes stored by each module of ``parts`` (a dict), each shared tensor counted once, in the
    first part that holds it (BERT's decoder weight *is* the word embedding: it counts there)."""
    seen, sizes = set(), {}
    for label, module in parts.items():
        sizes[label] = 0
        for tensor in stored_tensors(module):
            key = (tensor.data_ptr(), tensor.nbytes, tensor.dtype)
            if key not in seen:
                seen.add(key)
                sizes[label] += tensor.nbytes
    return sizes


@torch.inference_mode()
def component_times(model, batch, parts, *, warmup=2, repeats=5):
    """Median seconds spent inside each module of ``parts`` during ``model(**batch)``, and in total.

    Forward hooks read the clock when each part starts and ends (synchronizing CUDA first), so the
    parts are timed inside real forward passes. Returns ``({label: seconds}, total_seconds)``;
    the total includes what no part covers (masks, glue code).
    """
    import statistics

    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    samples = {label: [] for label in parts}
    starts, handles = {}, []

    for label, module in parts.items():
        handles.append(module.register_forward_pre_hook(lambda m, a, label=label: starts.__setitem__(label, clock())))
        handles.append(module.register_forward_hook(
            lambda m, a, o, label=label: samples[label].append(clock() - starts[label])))
    totals = []
    try:
        model.eval()
        for _ in range(warmup):
            model(**batch)
        for values in samples.values():
            values.clear()
        for _ in range(repeats):
            start = clock()
            model(**batch)
            totals.append(clock() - start)
    finally:
        for handle in handles:
            handle.remove()
    return {label: statistics.median(values) for label, values in samples.items()}, statistics.median(totals)


def component_shares(model, batch, *, warmup=2, repeats=5):
    """Size and time of the embeddings, the encoder and the MLM head of a ``BertForMaskedLM``.

    Returns:
        A pandas DataFrame indexed by part (plus "other" for time outside the three parts):
        ``size_mb``, ``size_share``, ``time_ms``, ``time_share``, and ``ceiling``: the largest
        overall speed-up a technique that speeds up *only this part* could give, 1 / (1 - time
        share) (Amdahl's law).
    """
    import pandas as pd

    parts = bert_components(model)
    sizes = component_bytes(parts)
    times, total = component_times(model, batch, parts, warmup=warmup, repeats=repeats)
    times["other"] = max(total - sum(times.values()), 0.0)
    sizes["other"] = sum(t.nbytes for t in stored_tensors(model)) - sum(sizes.values())
    table = pd.DataFrame({"size_mb": {k: v / 1e6 for k, v in sizes.items()},
                          "time_ms": {k: 1e3 * v for k, v in times.items()}})
    table["size_share"] = table["size_mb"] / table["size_mb"].sum()
    table["time_share"] = table["time_ms"] / table["time_ms"].sum()
    table["ceiling"] = 1 / (1 - table["time_share"]).clip(lower=1e-9)
    return table[["size_mb", "size_share", "time_ms", "time_share", "ceiling"]]


# ----------------------------------------------------------------------------------------------
# Granularity: per-tensor, per-channel, per-group and k-means weights (your 1.1, 1.9, 1.10)
# ----------------------------------------------------------------------------------------------

GRANULARITY_SCHEMES = ("per-tensor", "per-channel", "per-group", "k-means")
SCALE_BITS = 32
"""Every scale and every codebook entry is stored as one float32."""


def quantizable_linears(model):
    """``(name, module)`` of every ``nn.Linear`` of ``model`` whose weight is its own: the layers
    ``quantize_model`` quantizes (BERT's MLM decoder shares the word embeddings: left in float)."""
    tied = _tied_parameter_ids(model)
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and id(module.weight) not in tied]


def quantize_weight(weight, scheme, bits, group_size=None, iterations=20):
    """``weight`` (out, in) quantized by ``scheme`` and restored to float32, and the bits it stores.

    - "per-tensor": one absmax scale for the whole matrix (at 8 bits your ``absmax_quantize``
      with ``dim=None``, else your ``groupwise_quantize`` with the matrix as one group);
    - "per-channel": one scale per output row (your ``absmax_quantize(dim=1)`` at 8 bits, else
      ``groupwise_quantize`` with ``group_size = in``);
    - "per-group": your ``groupwise_quantize`` with ``group_size`` consecutive input weights per scale;
    - "k-means": your ``kmeans_quantize``, one codebook of ``2 ** bits`` float32 centroids.

    Returns:
        ``(restored, stored_bits)``: float32 of ``weight``'s shape; ``bits`` per value plus
        ``SCALE_BITS`` per scale or centroid.
    """
    yours = your_code.quantization  # your Exercise 1

    if scheme not in GRANULARITY_SCHEMES:
        raise ValueError(f"scheme must be one of {GRANULARITY_SCHEMES}, got {scheme!r}")
    w = weight.detach().to(torch.float32)
    rows, columns = w.shape
    if scheme == "k-means":
        codebook, indices = yours.kmeans_quantize(w, bits=bits, iterations=iterations)
        return codebook[indices.long()], w.numel() * bits + SCALE_BITS * codebook.numel()
    if scheme in ("per-tensor", "per-channel") and bits == 8:
        q, alpha = yours.absmax_quantize(w, dim=None if scheme == "per-tensor" else 1)
        return yours.absmax_dequantize(q, alpha), w.numel() * bits + SCALE_BITS * alpha.numel()
    if scheme == "per-tensor":
        q, alpha = yours.groupwise_quantize(w.reshape(1, -1), bits=bits, group_size=w.numel())
        return yours.groupwise_dequantize(q, alpha).reshape(rows, columns), w.numel() * bits + SCALE_BITS
    group_size = columns if scheme == "per-channel" else group_size
    q, alpha = yours.groupwise_quantize(w, bits=bits, group_size=group_size)
    return yours.groupwise_dequantize(q, alpha), w.numel() * bits + SCALE_BITS * alpha.numel()


def quantize_linear_weights(model, scheme, bits, group_size=None, iterations=20):
    """Replace every quantizable Linear weight of ``model`` by its quantized-and-restored values,
    in place ("fake quantization": the numbers a quantized model computes with, kept in float32).

    Returns:
        ``(model, stats)``: ``stats`` has ``bits_per_weight`` (stored bits over all those weights,
        scales and codebooks included) and ``weight_error``: ``||W_q - W|| / ||W||`` over all of them.
    """
    stored_bits = values = error_squared = norm_squared = 0
    for _, linear in quantizable_linears(model):
        restored, bits_stored = quantize_weight(linear.weight, scheme, bits, group_size, iterations)
        original = linear.weight.detach().to(torch.float32)
        error_squared += float((restored - original).double().pow(2).sum())
        norm_squared += float(original.double().pow(2).sum())
        stored_bits += bits_stored
        values += original.numel()
        with torch.no_grad():
            linear.weight.copy_(restored.to(linear.weight.dtype))
    return model, {"bits_per_weight": stored_bits / values, "weight_error": (error_squared / norm_squared) ** 0.5}


def granularity_configurations(bits=(4, 8), group_sizes=(32, 64, 128), kmeans_bits=(4,)):
    """``(scheme, bits, group_size)`` of the granularity study, coarsest first."""
    configurations = []
    for b in bits:
        configurations += [("per-tensor", b, None), ("per-channel", b, None)]
        configurations += [("per-group", b, g) for g in sorted(group_sizes, reverse=True)]
    return configurations + [("k-means", b, None) for b in kmeans_bits]


def granularity_label(scheme, bits, group_size=None):
    """Short name of one configuration, e.g. ``"4-bit per-group 64"``, ``"4-bit k-means"``."""
    return f"{bits}-bit {scheme}" + (f" {group_size}" if group_size else "")


def granularity_study(model, eval_set, *, bits=(4, 8), group_sizes=(32, 64, 128), kmeans_bits=(4,),
                      iterations=20, batch_size=32):
    """Quantize a copy of ``model``'s Linear weights by each granularity and measure it.

    Returns:
        A pandas DataFrame, one row per configuration (``granularity_configurations``):
        ``technique``, ``scheme``, ``bits``, ``group_size``, ``bits_per_weight`` (scales and
        codebooks included), ``weight_error`` and ``perplexity``.
    """
    import pandas as pd

    rows = []
    for scheme, b, group_size in granularity_configurations(bits, group_sizes, kmeans_bits):
        quantized, stats = quantize_linear_weights(copy.deepcopy(model), scheme, b, group_size, iterations)
        perplexity = masked_lm_perplexity(quantized, eval_set, batch_size=batch_size)["perplexity"]
        rows.append({"technique": granularity_label(scheme, b, group_size), "scheme": scheme, "bits": b,
                     "group_size": group_size, **stats, "perplexity": perplexity})
        del quantized
    return pd.DataFrame(rows)


GRANULARITY_STYLES = {"per-tensor": ("tab:red", "v"), "per-channel": ("tab:orange", "s"),
                      "per-group": ("tab:blue", "o"), "k-means": ("tab:green", "D")}


def plot_granularity(table, path=None, *, reference=None, model=None):
    """Perplexity (log scale) against stored bits per weight, one panel per bit width of
    ``granularity_study``'s table, one marker per configuration; ``reference`` (FP32) dashed.
    Each panel has its own scales, so the 8-bit differences are not flattened by the 4-bit ones."""
    import matplotlib.pyplot as plt

    from given.evaluation.plots import _plain_log_axis, _save, _subtitle

    widths = sorted(table["bits"].unique())
    fig, axes = plt.subplots(1, len(widths), figsize=(5.2 * len(widths), 5.2), squeeze=False)
    for ax, b in zip(axes[0], widths):
        panel = table[table["bits"] == b]
        for scheme, points in panel.groupby("scheme", sort=False):
            color, marker = GRANULARITY_STYLES.get(scheme, (None, "o"))
            points = points.sort_values("bits_per_weight")
            ax.plot(points["bits_per_weight"], points["perplexity"], marker=marker, color=color, markersize=8,
                    linestyle=":" if scheme == "per-group" else "none", label=scheme)
            if scheme == "per-group":
                for _, row in points.iterrows():
                    ax.annotate(f"groups of {int(row['group_size'])}", (row["bits_per_weight"], row["perplexity"]),
                                textcoords="offset points", xytext=(0, -15), ha="center", fontsize=8, color=color)
        if reference is not None:
            ax.axhline(reference, linestyle="--", color="gray", linewidth=1, label=f"FP32: {reference:,.1f}")
        _plain_log_axis(ax, list(panel["perplexity"]) + ([reference] if reference is not None else []), min_ratio=1.5)
        low, high = panel["bits_per_weight"].min(), panel["bits_per_weight"].max()
        ax.set_xlim(low - 0.15 * (high - low) - 0.05, high + 0.15 * (high - low) + 0.05)
        ax.set(title=f"{b}-bit values", xlabel="stored bits per weight (values + float32 scales or codebook)",
               ylabel="masked-LM perplexity (log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Quantization granularity: perplexity vs bits per weight\n" + _subtitle(table, model), fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Prune, then fine-tune with the mask kept (your 2.7), and sparsity chosen per layer
# ----------------------------------------------------------------------------------------------

def finetune_pruned(model, batches, *, learning_rate=1e-4, weight_decay=0.01, train_embeddings=False):
    """Fine-tune a pruned ``BertForMaskedLM`` on masked-LM ``batches`` with your ``masked_finetune_step``.

    The masks are the model's zeros now (``pruning_masks``); the optimizer is
    ``AdamW(lr=learning_rate, weight_decay=weight_decay)`` over the encoder and the MLM head's
    transform. The embeddings (and so the tied decoder) stay frozen unless ``train_embeddings``:
    pruning touched only the encoder, and freezing 30,522 x hidden weights makes each step cheaper.

    Returns:
        ``(model, losses)``: the model in eval mode, fine-tuned in place, and each step's loss.
    """
    from given.pruning_tools import pruning_masks
    masked_finetune_step = your_code.pruning.masked_finetune_step  # your Exercise 2.7

    masks = pruning_masks(model)
    frozen = [] if train_embeddings else list(model.bert.embeddings.parameters())
    for parameter in frozen:
        parameter.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=weight_decay)
    device = next(model.parameters()).device
    losses = []
    try:
        for batch in batches:
            inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
            losses.append(masked_finetune_step(model, masks, inputs, batch["labels"].to(device), optimizer))
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    return model.eval(), losses


def prune_then_finetune(model, eval_set, batches, *, fractions=(0.2, 0.4, 0.6, 0.8), structured=(0.4,),
                        learning_rate=1e-4, batch_size=32):
    """Perplexity of ``model`` pruned (``prune_copy``: "local" at each of ``fractions``,
    "structured" at each of ``structured``), before and after ``finetune_pruned`` on ``batches``.

    Every pruned copy is fine-tuned on the same batches, in the same order.

    Returns:
        A pandas DataFrame, one row per pruned model: ``method``, ``fraction``, ``removed``,
        ``perplexity_pruned``, ``perplexity_finetuned``, ``first_loss``, ``last_loss``.
    """
    import pandas as pd

    rows = []
    for method, method_fractions in (("local", fractions), ("structured", structured)):
        for fraction in method_fractions:
            pruned, removed = prune_copy(model, method, fraction)
            before = masked_lm_perplexity(pruned, eval_set, batch_size=batch_size)["perplexity"]
            pruned, losses = finetune_pruned(pruned, batches, learning_rate=learning_rate)
            if method == "local" and sparsity(pruned.bert.encoder, nn.Linear) < removed - 1e-9:
                raise RuntimeError(f"fine-tuning revived pruned weights: sparsity {removed:.3f} -> "
                                   f"{sparsity(pruned.bert.encoder, nn.Linear):.3f}")
            after = masked_lm_perplexity(pruned, eval_set, batch_size=batch_size)["perplexity"]
            rows.append({"method": method, "fraction": fraction, "removed": removed, "perplexity_pruned": before,
                         "perplexity_finetuned": after, "first_loss": losses[0], "last_loss": losses[-1]})
            del pruned
    return pd.DataFrame(rows)


def plot_finetune_recovery(table, path=None, *, reference=None, model=None):
    """Perplexity against the fraction of encoder weights removed, pruned only (dashed) and after
    the masked fine-tune (solid), per method; ``reference`` (unpruned) as a dashed gray line."""
    import matplotlib.pyplot as plt

    from given.evaluation.plots import PRUNING_STYLES, _finish_sparsity_plot, _plain_log_axis

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for method, points in table.groupby("method", sort=False):
        color, marker = PRUNING_STYLES.get(method, (None, "o"))
        points = points.sort_values("removed")
        x = 100 * points["removed"]
        ax.plot(x, points["perplexity_pruned"], marker=marker, color=color, linestyle="--", fillstyle="none",
                label=f"{method}: pruned")
        ax.plot(x, points["perplexity_finetuned"], marker=marker, color=color, label=f"{method}: pruned, then fine-tuned")
        for xi, before, after in zip(x, points["perplexity_pruned"], points["perplexity_finetuned"]):
            ax.annotate("", xy=(xi, after), xytext=(xi, before),
                        arrowprops=dict(arrowstyle="->", color=color, alpha=0.5, linewidth=1))
    if reference is not None:
        ax.axhline(reference, linestyle="--", color="gray", linewidth=1, label=f"unpruned: {reference:,.1f}")
    values = list(table["perplexity_pruned"]) + list(table["perplexity_finetuned"])
    _plain_log_axis(ax, values + ([reference] if reference is not None else []))
    return _finish_sparsity_plot(fig, ax, "Prune, then fine-tune with the mask kept", table, model, path)


def sensitivity_sparsities(sensitivity, target, *, spread=0.2, reference=None, maximum=0.95):
    """Per-layer pruning fractions from a one-layer-at-a-time scan (``layer_sensitivity``), whose
    weighted mean is ``target``: the least sensitive layers get up to ``target + spread``, the
    most sensitive down to ``target - spread`` (MIT 6.5940's sensitivity analysis, in its
    simplest form: by rank).

    Layers are ranked by the perplexity the scan measured with that layer pruned; fractions run
    linearly from high (least sensitive) to low, are clipped to [0, ``maximum``], and are shifted
    together until the mean weighted by each layer's weight count is ``target`` exactly.

    Returns:
        A pandas DataFrame: the scan's ``layer``, ``module``, ``weights``, ``perplexity``, and the
        chosen ``fraction``.
    """
    import numpy as np

    check_fraction(target, "target")
    table = sensitivity[["layer", "module", "weights", "perplexity"]].copy()
    ranks = table["perplexity"].rank(method="first").to_numpy() - 1  # 0 = least sensitive
    base = target + spread * (1 - 2 * ranks / max(len(table) - 1, 1))
    weights = table["weights"].to_numpy(dtype=float)

    def mean_with(shift):
        return float(np.average(np.clip(base + shift, 0.0, maximum), weights=weights))

    low, high = -1.0, 1.0
    for _ in range(60):  # bisection: the weighted mean grows with the shift
        middle = (low + high) / 2
        low, high = (middle, high) if mean_with(middle) < target else (low, middle)
    table["fraction"] = np.clip(base + (low + high) / 2, 0.0, maximum)
    return table


def prune_per_layer(model, fractions):
    """A deep copy of ``model`` with each encoder Linear pruned by its own fraction (your
    ``magnitude_mask``); ``fractions`` is ``sensitivity_sparsities``' table (``layer``, ``module``,
    ``fraction``). Returns ``(pruned, sparsity of the encoder's Linear weights)``."""
    magnitude_mask = your_code.pruning.magnitude_mask  # your Exercise 2

    pruned = copy.deepcopy(model)
    chosen = {(int(row.layer), row.module): float(row.fraction) for row in fractions.itertuples()}
    for name, linear in matching_modules(pruned.bert.encoder, nn.Linear):
        layer_index, module_name = name.removeprefix("layer.").split(".", 1)
        apply_mask(linear, magnitude_mask(linear.weight.detach(), chosen[(int(layer_index), module_name)]))
    return pruned, sparsity(pruned.bert.encoder, nn.Linear)
