"""Exercise 3 "Wax On, Wax Off.": knowledge distillation.

A small *student* network learns to imitate a large *teacher*. Besides the true labels, it is
trained to reproduce the teacher's whole output distribution, softened by a temperature T: the
small probabilities the teacher gives to wrong classes ("a 7 looks a bit like a 1") carry much of
what it knows (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a Neural Network").
DistilBERT (Sanh et al., 2019) applies this to BERT: a student of the same width with half the
layers, initialised from the teacher's own layers, trained on the teacher's masked-LM outputs.

Read top to bottom:

    compute_distillation_loss   Exercise 3.1   the soft-target loss T**2 * KL(teacher || student)
    distillation_step           Exercise 3.2   one student update on alpha * KD + (1 - alpha) * CE
    evenly_spaced_layers        Exercise 3.3   which teacher layers a shallower student keeps
    make_bert_student           Exercise 3.4   a shallower BERT initialised from the teacher

and, given at the end of the file, ``cross_entropy_loss`` (the CE term) and ``distill_model`` (the
training loop around your step; its plumbing is in given/distill_loop.py).

Conventions: logits are float tensors of shape ``(N, C)`` (one prediction per example) or
``(B, L, C)`` (one per token); C is the number of classes or the vocabulary size. Labels are
integer class indices of shape ``logits.shape[:-1]``; -100 marks a position without a label
(the PyTorch and Hugging Face convention).
"""
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from given.checks import (check_alpha, check_distillation_inputs, check_layer_counts, check_temperature,
                          check_training_hyperparameters)
from given.distill_loop import (check_finite_loss, check_models, check_outputs_match,
                                epoch_batches, first_batch, frozen_teacher, model_logits,
                                new_bert_like, trainable_parameters, unpack_batch)
from given.torch_utils import IGNORE_INDEX, model_device


# --------------------------------------------------------------------------------------------
# The distillation loss
# --------------------------------------------------------------------------------------------

def compute_distillation_loss(student_logits, teacher_logits, temperature, mask=None, reverse=False):
    """Hinton's soft-target loss: ``T**2 * KL(softmax(teacher / T) || softmax(student / T))``.

    Args:
        student_logits: float tensor ``(N, C)`` or ``(B, L, C)`` (any ``(..., C)``) of raw scores,
            before softmax. Gradients flow into it.
        teacher_logits: float tensor of the same shape, on the same device. It is a fixed
            target: no gradient ever flows into it, even when it requires grad. A logit of
            ``-inf`` is a class the teacher rules out (probability 0): it adds ``0 * log 0 = 0``
            to the forward KL, as ``F.kl_div`` with target probabilities (``torch.xlogy``) does, never NaN.
        temperature: T > 0. T = 1 is the plain softmax; T > 1 softens both distributions, so the
            student also learns from the small probabilities the teacher gives wrong classes.
        mask: optional bool tensor of shape ``logits.shape[:-1]`` (e.g. ``(B, L)``), on the same
            device: True marks a position that counts (a real token, not padding). At least one
            position must count.
        reverse: False (default): the forward KL(teacher || student) of Hinton et al.
            True: the reverse KL(student || teacher) (mode-seeking, as in MiniLLM, Gu et al. 2024).

    Returns:
        A scalar float32 tensor: the KL divergence, summed over the C classes, averaged over every
        counted position, times ``T**2``. For ``(N, C)`` logits that is the mean over the N rows
        (``kl_div(..., reduction="batchmean")``); for ``(B, L, C)`` it is the mean over the
        B * L tokens, not over the B sequences. Computed in float32 whatever the logits' dtype:
        upcast bfloat16 or float16 logits before the softmax (not only the result).

    Why ``T**2``: the gradient of the softened KL with respect to the student's logits scales as
    ``1 / T**2``; multiplying by ``T**2`` keeps the soft-target term's weight roughly independent
    of T, so that it can be mixed with the hard-label cross-entropy (Hinton et al., section 2).

    Raises:
        TypeError: logits that are not floating-point tensors, a mask that is not a bool tensor.
        ValueError: T <= 0; logits of different shapes or with fewer than 2 dimensions; empty
            logits; NaN or inf student logits; NaN or +inf teacher logits, or a position where
            every teacher logit is -inf; a mask of the wrong shape, or one that selects nothing.
    """
    check_distillation_inputs(student_logits, teacher_logits, temperature, mask)
    # Hint: Which of the two distributions is the fixed target, how do you stay finite for huge
    # logits or a class of probability 0, and which positions does the mean run over?
    # Hint 2, when you want it: python tools/hints.py 3.1
    # BEGIN SOLUTION Exercise 3.1: T**2 * KL(teacher || student) of the T-softened distributions, averaged over the counted positions
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p, log_q = (log_p_student, log_p_teacher) if reverse else (log_p_teacher, log_p_student)
    # p * (log p - log q) with 0 * log 0 = 0: a class of probability 0 (logit -inf) adds nothing.
    terms = torch.where(log_p == -math.inf, 0.0, log_p.exp() * (log_p - log_q))
    kl_per_position = terms.sum(dim=-1)  # shape logits.shape[:-1]
    if mask is not None:
        kl_per_position = kl_per_position[mask]
    return kl_per_position.mean() * temperature**2
    # END SOLUTION


# --------------------------------------------------------------------------------------------
# Training the student
# --------------------------------------------------------------------------------------------

def distillation_step(teacher_model, student_model, inputs, labels, kd_mask, optimizer,
                      temperature, alpha):
    """One update of the student on ``alpha * KD + (1 - alpha) * CE`` for one batch.

    KD is ``compute_distillation_loss(student_logits, teacher_logits, T, mask=kd_mask)``;
    CE is ``cross_entropy_loss(student_logits, labels)``. alpha weighs the distillation term, as
    in Hinton et al.: alpha = 1 learns from the teacher alone, alpha = 0 from the labels alone.
    A batch with no labelled position (every label -100) has CE = 0 (``cross_entropy_loss``'s
    rule), never NaN: the step then learns from the teacher alone.

    Args:
        teacher_model: the frozen teacher, already in eval mode. Run it without building a graph.
        student_model: the student, in train mode; ``optimizer`` updates its parameters.
        inputs: what both models take, on the student's device: a tensor (plain modules) or a
            dict of tensors (Hugging Face models). ``model_logits(model, inputs)`` (given) runs either.
        labels: integer tensor of shape ``logits.shape[:-1]``; -100 marks positions without a label.
        kd_mask: bool tensor of shape ``logits.shape[:-1]`` (True on real tokens), or None (all count).
        optimizer: a torch optimizer over the student's parameters.
        temperature: T > 0 of the distillation term.
        alpha: weight of the distillation term, in [0, 1].

    Returns:
        The batch's loss before the update, as a Python float.
    """
    check_temperature(temperature)
    check_alpha(alpha)
    # Hint: Which model needs a graph, and which must not build one? What is left in .grad from the
    # last batch when this step starts?
    # Hint 2, when you want it: python tools/hints.py 3.2
    # BEGIN SOLUTION Exercise 3.2: one student update on alpha * distillation loss + (1 - alpha) * cross-entropy
    with torch.no_grad():
        teacher_logits = model_logits(teacher_model, inputs)
    student_logits = model_logits(student_model, inputs)
    loss_kd = compute_distillation_loss(student_logits, teacher_logits, temperature, mask=kd_mask)
    loss_ce = cross_entropy_loss(student_logits, labels)
    loss = alpha * loss_kd + (1 - alpha) * loss_ce
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
    # END SOLUTION


# --------------------------------------------------------------------------------------------
# A shallower BERT student (DistilBERT's recipe)
# --------------------------------------------------------------------------------------------

def evenly_spaced_layers(num_teacher_layers, num_student_layers):
    """Indices of the teacher layers that a student with fewer layers keeps, evenly spaced.

    Student layer i copies teacher layer ``round(i * (L - 1) / (k - 1))`` (halves round up) for a
    teacher of L layers and a student of k layers, so the first and the last layer are always kept;
    a 1-layer student keeps layer 0. For 12 -> 6 this is ``[0, 2, 4, 7, 9, 11]``, DistilBERT's own
    choice ("taking one layer out of two"); 4 -> 2 gives ``[0, 3]``; L -> L gives every layer.

    Args:
        num_teacher_layers: L >= 1.
        num_student_layers: k with 1 <= k <= L.

    Returns:
        A strictly increasing list of k ints in ``[0, L)``.
    """
    check_layer_counts(num_teacher_layers, num_student_layers)
    # Hint: Student layer i sits i / (k - 1) of the way through the teacher: how do you round a half
    # up exactly, and what does k = 1 mean?
    # Hint 2, when you want it: python tools/hints.py 3.3
    # BEGIN SOLUTION Exercise 3.3: the k evenly spaced teacher layer indices (first and last kept; k = 1 keeps layer 0)
    if num_student_layers == 1:
        return [0]
    spans, gaps = num_teacher_layers - 1, num_student_layers - 1
    # floor(i * spans / gaps + 1/2) in exact integer arithmetic: halves round up, no float error.
    return [(2 * i * spans + gaps) // (2 * gaps) for i in range(num_student_layers)]
    # END SOLUTION


def make_bert_student(teacher, num_layers=None):
    """A new, shallower ``BertForMaskedLM`` initialised from ``teacher`` (Sanh et al., 2019).

    The student has the teacher's configuration (same width, heads, vocabulary) except its depth,
    ``num_layers`` encoder layers. Its embeddings and masked-LM head are copies of the teacher's,
    and its layer i is a copy of teacher layer ``evenly_spaced_layers(L, num_layers)[i]``.

    Args:
        teacher: a full-precision ``transformers.BertForMaskedLM`` with L encoder layers. Unchanged.
        num_layers: the student's depth, 1 <= num_layers <= L. None: ``ceil(L / 2)`` (every other
            layer; 6 of BERT-base's 12, as in DistilBERT).

    Returns:
        The student, in eval mode, on the teacher's device and dtype. Its tensors are copies: it
        shares no storage with the teacher (within the student, the decoder weight stays tied to
        the word embeddings when the configuration ties them, as in the teacher). Every parameter
        of the student is trainable (``requires_grad``) whatever the teacher's: a teacher is
        usually frozen before distillation, and the student is what distillation trains.
    """
    from transformers import BertForMaskedLM

    if not isinstance(teacher, BertForMaskedLM):
        raise TypeError(f"teacher must be a transformers BertForMaskedLM, got {type(teacher).__name__}")
    num_teacher_layers = teacher.config.num_hidden_layers
    if num_layers is None:
        num_layers = (num_teacher_layers + 1) // 2
    layer_ids = evenly_spaced_layers(num_teacher_layers, num_layers)
    student = new_bert_like(teacher, num_layers)  # random weights, all overwritten below
    # Hint: Which three parts of the teacher does the student copy, and how do you copy values
    # without making the two models share tensors?
    # Hint 2, when you want it: python tools/hints.py 3.4
    # BEGIN SOLUTION Exercise 3.4: copy the teacher's embeddings, masked-LM head and chosen layers into the student
    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
    for student_layer, teacher_index in zip(student.bert.encoder.layer, layer_ids):
        student_layer.load_state_dict(teacher.bert.encoder.layer[teacher_index].state_dict())
    student.cls.load_state_dict(teacher.cls.state_dict())
    # END SOLUTION
    return student.eval()


# ============================================================================================
# Given, not graded: the cross-entropy your step uses (read its docstring), and distill_model,
# the training loop around your step (its plumbing is in given/distill_loop.py).
# ============================================================================================

def cross_entropy_loss(logits, labels):
    """Mean cross-entropy of ``logits`` against hard ``labels`` over the labelled positions.

    Args:
        logits: float tensor ``(..., C)``.
        labels: integer tensor of shape ``logits.shape[:-1]``; positions labelled -100 do not count.

    Returns:
        A scalar float32 tensor. When no position carries a label it is 0 (and still
        differentiable), not the NaN that ``F.cross_entropy`` gives for an empty mean.
    """
    logits, labels = logits.flatten(0, -2).float(), labels.flatten()
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def distill_model(teacher_model, student_model, train_data, temperature, alpha, num_epochs,
                  learning_rate, *, progress=True, device=None):
    """Train ``student_model`` to imitate ``teacher_model`` (Hinton et al., 2015).

    Every batch, the student takes one Adam step on ``alpha * KD + (1 - alpha) * CE``
    (see ``distillation_step``): alpha weighs the distillation term, ``1 - alpha`` the labels.

    Args:
        teacher_model: any ``nn.Module`` returning logits (a tensor, or an output with ``.logits``
            such as a Hugging Face ``BertForMaskedLM``). Frozen: it runs in eval mode under
            ``torch.no_grad()`` and its parameters and buffers are never changed. It stays on its
            own device (its inputs are copied there and its logits back). Its training flag is
            restored on return.
        student_model: a module with the same output shape as the teacher. Trained in train mode
            with Adam on its parameters that require grad; returned in eval mode.
        train_data: a re-iterable of batches (a ``DataLoader`` or a list, not a generator), each
            either ``(inputs, labels)`` (plain modules: ``model(inputs)``, logits ``(N, C)``,
            labels ``(N,)``), or a dict with ``input_ids``, ``attention_mask``, ``labels`` and any
            other model inputs (Hugging Face: ``model(**inputs)`` without the labels, logits
            ``(B, L, C)``, labels ``(B, L)`` with -100 on ignored positions).
            CE counts only labelled positions. KD counts every real token (attention_mask == 1,
            as in DistilBERT), labelled or not, and never padding; without an attention mask,
            every position.
        temperature: T > 0 of the distillation term.
        alpha: weight of the distillation term, in [0, 1].
        num_epochs: number of passes over ``train_data``, >= 1.
        learning_rate: Adam's learning rate, > 0.
        progress: show a tqdm progress bar per epoch. The epoch's loss is printed either way.
        device: where to train the student (it is moved there); None keeps its current device.
            Batches are moved to the student's device.

    Returns:
        ``(student_model, epoch_losses)``: the trained student (the same object) and a list of
        ``num_epochs`` floats, each the mean over the epoch's batches of the batch loss.

    Raises:
        TypeError: models that are not modules, batches of another form, a one-shot iterator.
        ValueError: alpha outside [0, 1], T <= 0, num_epochs < 1, learning_rate <= 0, an empty
            ``train_data``, teacher and student with different output shapes, labels of the wrong
            shape. All of these are checked before any training (running the first batch through
            both models once, in eval mode and without gradients).
        FloatingPointError: the loss became NaN or infinite (lower the learning rate).
    """
    check_training_hyperparameters(temperature, alpha, num_epochs, learning_rate)
    check_models(teacher_model, student_model)
    if device is not None:
        student_model.to(device)
    device = model_device(student_model)
    first = first_batch(train_data)
    optimizer = torch.optim.Adam(trainable_parameters(student_model), lr=learning_rate)

    with frozen_teacher(teacher_model):
        check_outputs_match(teacher_model, student_model, *unpack_batch(first, device)[:2])
        epoch_losses = []
        for epoch in range(num_epochs):
            student_model.train()
            batch_losses = []
            for batch in epoch_batches(train_data, epoch, num_epochs, progress):
                inputs, labels, kd_mask = unpack_batch(batch, device)
                loss = distillation_step(teacher_model, student_model, inputs, labels, kd_mask,
                                         optimizer, temperature, alpha)
                check_finite_loss(loss, epoch, len(batch_losses) + 1, learning_rate)
                batch_losses.append(loss)
            epoch_losses.append(sum(batch_losses) / len(batch_losses))
            tqdm.write(f"Epoch {epoch + 1}/{num_epochs}: loss {epoch_losses[-1]:.4f}")
    student_model.eval()
    return student_model, epoch_losses
