"""The plumbing of the distillation loop (given code): batches, devices, checks, the teacher.

``distill_model`` (in ``distillation.py``) reads top to bottom with these helpers; your
``distillation_step`` calls ``model_logits``.
"""
import contextlib
import copy
import math
from collections.abc import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from given.torch_utils import model_device


def model_logits(model, inputs):
    """Run ``model`` on ``inputs`` and return its logits, on the device the inputs came on.

    Args:
        model: a module returning a tensor, or an output object with ``.logits`` (Hugging Face).
        inputs: a tensor (called as ``model(inputs)``) or a dict of tensors (``model(**inputs)``).
            They are copied to the model's device first when it differs.
    """
    device = model_device(model)
    if isinstance(inputs, Mapping):
        inputs_device = next(iter(inputs.values())).device
        output = model(**{key: value.to(device) for key, value in inputs.items()})
    else:
        inputs_device = inputs.device
        output = model(inputs.to(device))
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{type(model).__name__} returned {type(output).__name__}: expected a "
                        "logits tensor or an output with a .logits tensor")
    return logits.to(inputs_device)


def trainable_parameters(student_model):
    parameters = [p for p in student_model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("student_model has no parameter that requires grad: nothing to train")
    return parameters


def first_batch(train_data):
    """The first batch of ``train_data``; a clear error when it is empty or not re-iterable."""
    try:
        iterator = iter(train_data)
    except TypeError:
        raise TypeError(f"train_data must be an iterable of batches (a DataLoader or a list), "
                        f"got {type(train_data).__name__}") from None
    if iterator is train_data:
        raise TypeError("train_data is a one-shot iterator (e.g. a generator): it would be empty "
                        "after the first epoch; pass a DataLoader or a list of batches")
    try:
        return next(iterator)
    except StopIteration:
        raise ValueError("train_data is empty: it yielded no batch") from None


def check_finite_input(tensor, name):
    """Floating-point model inputs must be finite: NaN or inf data would make the loss NaN."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise ValueError(f"{name} hold {int(torch.isnan(tensor).sum())} NaN and "
                         f"{int(torch.isinf(tensor).sum())} inf values: the training data is bad "
                         "(clean it; this is not a learning-rate problem)")
    return tensor


def unpack_batch(batch, device):
    """``(inputs, labels, kd_mask)`` of one batch, moved to ``device``.

    ``(inputs, labels)`` -> ``(inputs, labels, None)``. A dict -> every entry but ``labels`` as
    the model inputs, its ``labels``, and ``attention_mask == 1`` as the distillation mask
    (None without an attention mask).
    """
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise ValueError(f"a dict batch needs 'labels' (-100 = ignored), got keys {sorted(batch)}")
        for key, value in batch.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"batch[{key!r}] must be a tensor, got {type(value).__name__}")
        inputs = {key: value.to(device) for key, value in batch.items() if key != "labels"}
        for key, value in inputs.items():
            check_finite_input(value, f"batch[{key!r}]")
        kd_mask = inputs["attention_mask"] == 1 if "attention_mask" in inputs else None
        return inputs, batch["labels"].to(device), kd_mask
    if (isinstance(batch, (tuple, list)) and len(batch) == 2
            and all(isinstance(part, torch.Tensor) for part in batch)):
        inputs, labels = batch
        return check_finite_input(inputs.to(device), "the batch's inputs"), labels.to(device), None
    raise TypeError("each batch must be a pair of tensors (inputs, labels) or a dict with "
                    f"'input_ids', 'attention_mask' and 'labels', got {type(batch).__name__}")


def check_outputs_match(teacher_model, student_model, inputs, labels):
    """Run one batch through both models (eval mode, no grad) and compare the output shapes."""
    student_was_training = student_model.training
    student_model.eval()
    try:
        with torch.no_grad():
            teacher_logits = model_logits(teacher_model, inputs)
            student_logits = model_logits(student_model, inputs)
    finally:
        student_model.train(student_was_training)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher and student outputs differ in shape on the first batch: teacher "
                         f"{tuple(teacher_logits.shape)}, student {tuple(student_logits.shape)}; "
                         "distillation needs the same classes (or vocabulary) in the same order")
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(f"labels have shape {tuple(labels.shape)} but the logits "
                         f"{tuple(student_logits.shape)}: labels must have the logits' shape "
                         "without the class dimension")


def new_bert_like(teacher, num_layers):
    """A randomly initialised BertForMaskedLM with the teacher's config but ``num_layers`` layers.

    On the teacher's device and dtype. The global torch RNG is left as it was.
    """
    from transformers import BertForMaskedLM

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = num_layers
    with torch.random.fork_rng(devices=[]):
        student = BertForMaskedLM(config)
    reference = next(teacher.parameters())
    return student.to(device=reference.device, dtype=reference.dtype)


def check_models(teacher_model, student_model):
    """Both must be modules, and the student must own its parameters: a student that is, or
    shares a tensor with, its teacher would change the teacher as it trains."""
    for name, model in (("teacher_model", teacher_model), ("student_model", student_model)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    if student_model is teacher_model:
        raise ValueError("student_model is the teacher_model itself; distil into a separate copy "
                         "(e.g. distillation.make_bert_student(teacher) or copy.deepcopy(teacher))")
    teacher_storage = {p.data_ptr() for p in teacher_model.parameters()}
    shared = [name for name, p in student_model.named_parameters() if p.data_ptr() in teacher_storage]
    if shared:
        raise ValueError(f"the student shares {len(shared)} parameter(s) with the teacher (first: "
                         f"{shared[0]}); training would change the teacher. Give the student its "
                         "own copies (copy.deepcopy, or load_state_dict into a new module)")


@contextlib.contextmanager
def frozen_teacher(teacher_model):
    """Put the teacher in eval mode for the block; restore its training flag afterwards."""
    was_training = teacher_model.training
    teacher_model.eval()
    try:
        yield teacher_model
    finally:
        teacher_model.train(was_training)


def epoch_batches(train_data, epoch, num_epochs, progress):
    """The batches of one epoch, behind a tqdm progress bar unless ``progress`` is False."""
    return tqdm(train_data, desc=f"Distillation epoch {epoch + 1}/{num_epochs}",
                disable=not progress, leave=False)


def check_finite_loss(loss, epoch, batch, learning_rate):
    """A NaN or infinite loss stops training with a message that says where it happened."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss} at epoch {epoch + 1}, batch {batch}; "
                                 f"with finite inputs that means training diverged: try a smaller "
                                 f"learning_rate (got {learning_rate})")
