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
import time

import torch
from torch import nn

from given.bert_surgery import shrink_bert
from given.checks import check_fraction
from given.evaluation import MaskedEvalSet, masked_lm_perplexity
from given.matmul import int8_matmul_int32
from given.pruning_tools import sparsity
from given.quantized_linear import _tied_parameter_ids
from given.quantized_vector import QuantizedVector
from given.sizes import stored_tensors
from given.timing import _synchronize
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
        quantized = QuantizedVector(linear.weight.detach().T.to(torch.float32), "int8", dim=None)
        self.register_buffer("weight_quantized", quantized.quantized_vector.T.contiguous())  # (out, in)
        self.register_buffer("weight_scale", torch.as_tensor(quantized.alpha, dtype=torch.float32))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)

    def forward(self, x):
        *leading, in_features = x.shape
        x2d = x.reshape(-1, in_features).to(torch.float32)
        x_q = QuantizedVector(x2d, "int8", dim=None)  # one scale for every token and feature
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
    from pruning import apply_weight_pruning  # your Exercise 2

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
    from pruning import magnitude_mask  # your Exercise 2

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

    def clock():
        _synchronize()
        return time.perf_counter()

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
