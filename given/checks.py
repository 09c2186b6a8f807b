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
