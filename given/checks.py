"""Argument checks with clear error messages (given code, shared by every module of the lab).

Each check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong value)
with a message that says what was wrong and what is allowed, and returns the checked value.
"""
import math
import numbers

import torch


def is_real_number(value):
    """Whether ``value`` is a real number (int, float, NumPy scalar), ``bool`` excluded."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value):
    """Whether ``value`` is an integer (int, NumPy integer), ``bool`` excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_fraction(value, name):
    """Return ``value`` as a float, or raise if it is not a fraction in [0, 1].

    Raises:
        TypeError: ``value`` is not a real number (``bool`` included).
        ValueError: ``value`` is outside [0, 1] or NaN. A value in (1, 100] is most likely a
            percentage, so the message suggests the fraction (20 -> "did you mean 0.2?").
    """
    if not is_real_number(value):
        raise TypeError(f"{name} must be a fraction in [0, 1] (a float), got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also False for NaN
        hint = f"; did you mean {value / 100:g}?" if 1.0 < value <= 100.0 else ""
        raise ValueError(f"{name} must be a fraction in [0, 1]{hint} (got {value:g})")
    return value


def check_positive_integer(value, name):
    """Return ``value`` if it is an integer >= 1, else raise ``ValueError``."""
    if not (is_integer(value) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_floating_tensor(tensor, name, *, allow_empty=False):
    """Raise unless ``tensor`` is a finite floating-point tensor (non-empty unless ``allow_empty``).

    Raises:
        TypeError: not a tensor, or not a floating-point dtype.
        ValueError: empty, or holding NaN or inf (the message counts them).
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/"
                        f"float64), got dtype {tensor.dtype}")
    if tensor.numel() == 0:
        if allow_empty:
            return tensor
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)})")
    if not torch.isfinite(tensor.sum()) and not torch.isfinite(tensor).all():  # sum: one cheap pass
        nan_count = int(torch.isnan(tensor).sum())
        inf_count = int(torch.isinf(tensor).sum())
        raise ValueError(f"{name} contains {nan_count} NaN and {inf_count} inf values; "
                         "only finite values are allowed")
    return tensor


def check_dim(tensor, dim):
    """Raise unless ``dim`` is ``None`` or a valid dimension index of ``tensor``."""
    if dim is None:
        return None
    if not is_integer(dim) or not -tensor.dim() <= dim < tensor.dim():
        raise ValueError(f"dim must be None or an int in [{-tensor.dim()}, {tensor.dim() - 1}] "
                         f"for a tensor of shape {tuple(tensor.shape)}, got {dim!r}")
    return dim


def check_threshold(threshold):
    """LLM.int8()'s outlier threshold: ``None`` (decomposition off) or a finite number >= 0."""
    if threshold is not None and not (is_real_number(threshold) and math.isfinite(threshold)
                                      and threshold >= 0):
        raise ValueError(f"threshold must be None or a finite number >= 0, got {threshold!r}")
    return threshold


def check_matmul_arguments(input, weight, threshold):
    """The arguments of ``mixed_precision_forward``: input (..., in), weight (in, out), threshold.

    ``weight`` is a float tensor or an already quantized ``QuantizedVector(weight, "int8", dim=0)``.
    """
    check_floating_tensor(input, "input", allow_empty=True)
    if hasattr(weight, "quantization_format"):  # a QuantizedVector (given/quantized_vector.py)
        if weight.quantization_format != "int8" or weight.dim != 0:
            raise ValueError(f"a quantized weight must be QuantizedVector(weight, \"int8\", dim=0) "
                             f"(int8, one scale per output column); got format "
                             f"{weight.quantization_format!r} with dim={weight.dim}")
    else:
        check_floating_tensor(weight, "weight", allow_empty=True)
    if input.dim() < 1 or len(weight.shape) != 2:
        raise ValueError(f"expected input of shape (..., in) and weight of shape (in, out); got "
                         f"input {tuple(input.shape)} and weight {tuple(weight.shape)}")
    if input.shape[-1] != weight.shape[0]:
        hint = (" (weight looks like nn.Linear's (out, in) layout: pass weight.T)"
                if input.shape[-1] == weight.shape[1] else "")
        raise ValueError(f"shape mismatch: input has {input.shape[-1]} features but weight has "
                         f"{weight.shape[0]} rows; weight must be (in, out){hint}")
    check_threshold(threshold)


def check_temperature(temperature):
    """The distillation temperature: a finite number > 0."""
    if not (is_real_number(temperature) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0 (1 = plain softmax, "
                         f"larger = softer), got {temperature!r}")
    return temperature


def check_alpha(alpha):
    """The weight of the distillation term: a number in [0, 1] (NaN is refused)."""
    if not (is_real_number(alpha) and 0 <= alpha <= 1):
        raise ValueError(f"alpha weighs the distillation term and must be in [0, 1] "
                         f"(1 = teacher only, 0 = labels only), got {alpha!r}")
    return alpha


def check_distillation_inputs(student_logits, teacher_logits, temperature, mask):
    """The arguments of ``compute_distillation_loss`` (see its docstring for the contract)."""
    check_temperature(temperature)
    for name, logits in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not (isinstance(logits, torch.Tensor) and logits.is_floating_point()):
            raise TypeError(f"{name} must be a floating-point tensor, got "
                            f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    if student_logits.dim() < 2:
        raise ValueError(f"logits must be (N, C) or (B, L, C), got shape {tuple(student_logits.shape)}")
    if student_logits.device != teacher_logits.device:
        raise ValueError(f"student_logits are on {student_logits.device} but teacher_logits on "
                         f"{teacher_logits.device}")
    check_finite_logits(student_logits, teacher_logits)
    if mask is None:
        return
    positions = tuple(student_logits.shape[:-1])
    if not (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool):
        raise TypeError(f"mask must be a bool tensor of shape {positions} (True = counts), got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}; e.g. attention_mask == 1")
    if tuple(mask.shape) != positions:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; it must have the logits' shape "
                         f"without the class dimension, {positions}")
    if mask.device != student_logits.device:
        raise ValueError(f"mask is on {mask.device} but the logits are on {student_logits.device}")
    if not mask.any():
        raise ValueError("mask selects no position: at least one position must count")


def check_training_hyperparameters(temperature, alpha, num_epochs, learning_rate):
    """The hyperparameters of ``distill_model``."""
    check_temperature(temperature)
    check_alpha(alpha)
    check_positive_integer(num_epochs, "num_epochs")
    if not (is_real_number(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")


def check_layer_counts(num_teacher_layers, num_student_layers):
    """A student depth k and a teacher depth L with 1 <= k <= L."""
    check_positive_integer(num_teacher_layers, "num_teacher_layers")
    check_positive_integer(num_student_layers, "num_student_layers")
    if num_student_layers > num_teacher_layers:
        raise ValueError(f"the student cannot have more layers ({num_student_layers}) than the "
                         f"teacher ({num_teacher_layers})")


def check_finite_logits(student_logits, teacher_logits):
    """Logit values of the distillation loss: non-empty; the student's finite; the teacher's
    finite or ``-inf`` (a masked class: probability 0), with at least one finite logit per position."""
    if student_logits.numel() == 0:
        raise ValueError(f"the logits are empty (shape {tuple(student_logits.shape)}): nothing to distil")
    check_floating_tensor(student_logits.detach(), "student_logits")
    teacher = teacher_logits.detach()
    if torch.isnan(teacher).any() or (teacher == math.inf).any():
        raise ValueError(f"teacher_logits contain {int(torch.isnan(teacher).sum())} NaN and "
                         f"{int((teacher == math.inf).sum())} +inf values; only finite values and "
                         "-inf (a class the teacher rules out) are allowed")
    if (teacher == -math.inf).all(dim=-1).any():
        raise ValueError("teacher_logits have a position where every class is -inf: the teacher "
                         "gives no distribution there")


def check_kept_indices(keep, size, name="keep"):
    """Indices to keep along a dimension of ``size``: a 1-D integer tensor or list, strictly
    increasing (so no duplicates), in ``[0, size)``, not empty. Returns them as an int64 tensor."""
    if isinstance(keep, torch.Tensor):
        if keep.dtype == torch.bool:
            raise TypeError(f"{name} must hold indices, not a bool mask (for a mask m, pass "
                            f"m.nonzero().flatten())")
        if keep.is_floating_point() or keep.is_complex() or keep.dim() != 1:
            raise TypeError(f"{name} must be a 1-D integer tensor of indices, got dtype {keep.dtype} "
                            f"and shape {tuple(keep.shape)}")
        keep = keep.to(torch.long).cpu()
    elif isinstance(keep, (list, tuple, range)) and all(is_integer(i) for i in keep):
        keep = torch.tensor(list(keep), dtype=torch.long)
    else:
        raise TypeError(f"{name} must be a 1-D integer tensor (or a list of ints) of indices, got {keep!r}")
    if keep.numel() == 0:
        raise ValueError(f"{name} is empty: a layer must keep at least one row or column")
    if not (0 <= int(keep.min()) and int(keep.max()) < size):
        raise ValueError(f"{name} must be indices in [0, {size}), got values from {int(keep.min())} "
                         f"to {int(keep.max())}")
    if keep.numel() > 1 and not bool((keep[1:] > keep[:-1]).all()):
        raise ValueError(f"{name} must be strictly increasing (sorted, no duplicates), got "
                         f"{keep.tolist()[:20]}")
    return keep


def check_head_positions(heads, head_count):
    """Heads to remove from a layer of ``head_count`` heads: distinct ints in ``[0, head_count)``,
    leaving at least one head. Returns them sorted."""
    if isinstance(heads, torch.Tensor):
        heads = heads.tolist() if not heads.is_floating_point() and heads.dtype != torch.bool else [heads]
    if not isinstance(heads, (list, tuple, set, range)) or not all(is_integer(h) for h in heads):
        raise TypeError(f"heads must be a list of head positions (ints), got {heads!r}")
    positions = sorted(int(h) for h in heads)
    if len(set(positions)) != len(positions) or any(not 0 <= h < head_count for h in positions) \
            or len(positions) >= head_count:
        raise ValueError(f"heads must be distinct positions in [0, {head_count}) leaving at least one "
                         f"head, got {positions}")
    return positions


def check_known_keywords(given, known, what, examples=()):
    """Raise ``TypeError`` naming any key of ``given`` not in ``known`` (a typo is never ignored)."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(f"unknown {what} {unknown}" + (f"; e.g. {', '.join(examples)}" if examples else ""))


def check_bits(bits, low, high, what):
    """An integer bit width in ``[low, high]`` (``what`` names the format in the message)."""
    if not (is_integer(bits) and low <= bits <= high):
        raise ValueError(f"bits must be an integer from {low} to {high} for {what}, got {bits!r}")
    return int(bits)


def check_groupwise_arguments(v, bits, group_size):
    """The arguments of ``groupwise_quantize``: a finite float (n, k) tensor, bits from 2 to 8
    (``2 ** (bits - 1) - 1`` levels each side of 0: bits=1 would leave none), and a group size
    that divides k."""
    check_floating_tensor(v, "v")
    check_bits(bits, 2, 8, "group-wise quantization (int8 values, 2 ** (bits - 1) - 1 levels each side of 0)")
    check_positive_integer(group_size, "group_size")
    if v.dim() != 2:
        raise ValueError(f"v must be a 2-D (n, k) tensor whose rows are cut into groups, got shape "
                         f"{tuple(v.shape)}")
    if v.shape[1] % group_size != 0:
        divisors = [d for d in (32, 64, 128, v.shape[1]) if v.shape[1] % d == 0]
        raise ValueError(f"the rows of v have {v.shape[1]} values, not a multiple of group_size="
                         f"{group_size}: every group must be whole (group sizes that fit: {divisors})")


def check_groupwise_dequantize_arguments(q, alpha):
    """The arguments of ``groupwise_dequantize``: int8 ``q`` (n, k) and float ``alpha``
    (n, k // group_size), so that the group size ``k // alpha.shape[1]`` is whole."""
    if not (isinstance(q, torch.Tensor) and q.dtype == torch.int8 and q.dim() == 2):
        raise TypeError(f"q must be a 2-D int8 tensor (n, k), got "
                        f"{getattr(q, 'dtype', type(q).__name__)} of shape {tuple(getattr(q, 'shape', ()))}")
    if not (isinstance(alpha, torch.Tensor) and alpha.is_floating_point() and alpha.dim() == 2):
        raise TypeError(f"alpha must be a 2-D float tensor (n, k // group_size), got "
                        f"{getattr(alpha, 'dtype', type(alpha).__name__)} of shape "
                        f"{tuple(getattr(alpha, 'shape', ()))}")
    if alpha.shape[0] != q.shape[0] or alpha.shape[1] == 0 or q.shape[1] % alpha.shape[1] != 0:
        raise ValueError(f"q {tuple(q.shape)} and alpha {tuple(alpha.shape)} do not match: alpha must have "
                         f"q's rows and one column per group, a whole number of groups per row")


def check_kmeans_arguments(v, bits, iterations):
    """The arguments of ``kmeans_quantize``: a finite float tensor, bits from 1 to 8 (the indices are
    uint8: at most 256 centroids), and a number of iterations >= 0."""
    check_floating_tensor(v, "v")
    check_bits(bits, 1, 8, "k-means quantization (uint8 indices: at most 2 ** 8 centroids)")
    if not (is_integer(iterations) and iterations >= 0):
        raise ValueError(f"iterations must be an integer >= 0 (0: the uniform grid itself), got {iterations!r}")
    return int(iterations)


def check_finetune_arguments(model, masks, inputs, labels):
    """The arguments of ``masked_finetune_step``: ``masks`` maps names of ``model``'s parameters to
    bool tensors of their shapes; ``inputs`` is a dict with ``input_ids`` (batch, length), and
    ``labels`` an integer tensor of that shape (-100 = not scored)."""
    if not isinstance(masks, dict):
        raise TypeError(f"masks must be a dict {{parameter name: bool mask}} (see given.pruning_tools."
                        f"pruning_masks), got {type(masks).__name__}")
    parameters = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in parameters:
            close = [p for p in parameters if p.endswith(str(name)) or str(name).endswith(p)][:3]
            raise ValueError(f"masks names {name!r}, which is not a parameter of the model"
                             + (f" (did you mean {close}?)" if close else
                                " (keys are model.named_parameters() names, e.g. "
                                f"{next(iter(parameters), '')!r})"))
        if not (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
                and mask.shape == parameters[name].shape):
            raise ValueError(f"masks[{name!r}] must be a bool tensor of shape {tuple(parameters[name].shape)} "
                             f"(True = kept), got {getattr(mask, 'dtype', type(mask).__name__)} of shape "
                             f"{tuple(getattr(mask, 'shape', ()))}")
    if not (isinstance(inputs, dict) and isinstance(inputs.get("input_ids"), torch.Tensor)):
        raise TypeError("inputs must be a dict with at least 'input_ids' (and usually 'attention_mask'), "
                        f"as the model takes them; got {type(inputs).__name__}")
    if "labels" in inputs:
        raise ValueError("pass the labels as the labels argument, not inside inputs")
    if not (isinstance(labels, torch.Tensor) and not labels.is_floating_point() and labels.dtype != torch.bool
            and labels.shape == inputs["input_ids"].shape):
        raise ValueError(f"labels must be an integer tensor of input_ids' shape {tuple(inputs['input_ids'].shape)} "
                         f"(-100 = not scored), got {getattr(labels, 'dtype', type(labels).__name__)} of shape "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    if not bool((labels != -100).any()):
        raise ValueError("labels score no position (all are -100): the loss would be NaN")
