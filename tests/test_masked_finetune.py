"""Autograder for Exercise 2.7 (pruning.py): fine-tuning a pruned model with its mask kept.

The reference (``reference_step``) is written here: the masked-LM cross-entropy computed from the
logits with ``F.cross_entropy``, one optimizer step on a twin model whose optimizer holds the same
state, then the masks. The models are small seeded BERTs without dropout, pruned here by magnitude
(not with your Exercise 2.1, so that this score does not depend on it). The trap is set the way it
happens in practice: the optimizer has already taken steps before the model is pruned, so AdamW's
moment estimates would move the pruned weights if they were not masked again after each step.
``given.pruning_tools.pruning_masks`` itself is tested in test_given.py.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from given.pruning_tools import pruning_masks
from helpers import NO_DROPOUT, bert_inputs, small_bert
from pruning import masked_finetune_step

pytestmark = [pytest.mark.ex2_pruning, pytest.mark.usefixtures("one_thread")]

VOCAB = 300
STEPS = 30
"""AdamW steps in the long test: enough for moments filled before pruning to revive a weight."""



def mlm_batch(batch=3, length=9):
    """``(inputs, labels)``: random tokens, the last sequence padded, about 30% of the real tokens
    scored (at least one), -100 elsewhere."""
    inputs = bert_inputs(vocab_size=VOCAB, batch=batch, length=length, padded_from=length - 3)
    labels = torch.randint(0, VOCAB, (batch, length))
    scored = (torch.rand(batch, length) < 0.3) & (inputs["attention_mask"] == 1)
    scored[0, 1] = True
    return inputs, torch.where(scored, labels, torch.full_like(labels, -100))


def prune_by_magnitude(model, fraction):
    """Zero the smallest ``fraction`` of every encoder Linear weight (ties broken by position)."""
    for module in model.bert.encoder.modules():
        if isinstance(module, nn.Linear):
            flat = module.weight.detach().abs().flatten()
            order = torch.argsort(flat, stable=True)
            keep = torch.ones_like(flat, dtype=torch.bool)
            keep[order[:round(fraction * flat.numel())]] = False
            with torch.no_grad():
                module.weight.mul_(keep.view_as(module.weight))


def trained_then_pruned(fraction=0.5, warm_steps=3, lr=1e-2, weight_decay=0.01):
    """A seeded small BERT and its AdamW after ``warm_steps`` unmasked steps, then pruned."""
    model = small_bert(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, **NO_DROPOUT)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(warm_steps):
        inputs, labels = mlm_batch()
        optimizer.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
    prune_by_magnitude(model, fraction)
    return model, optimizer


def twin(model, optimizer):
    """A deep copy of ``model`` with an optimizer of the same kind holding the same state."""
    model_copy = copy.deepcopy(model)
    optimizer_copy = type(optimizer)(model_copy.parameters())
    optimizer_copy.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # lr, weight decay and moments
    return model_copy, optimizer_copy


def reference_step(model, masks, inputs, labels, optimizer):
    """The contract, restated: loss from the logits, zero_grad, backward, step, masks again."""
    model.train()
    optimizer.zero_grad()
    logits = model(**inputs).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    loss.backward()
    optimizer.step()
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name].mul_(mask)
    return loss.item()


def assert_pruned_stay_zero(model, masks, when):
    parameters = dict(model.named_parameters())
    for name, mask in masks.items():
        revived = parameters[name].detach()[~mask] != 0
        assert not revived.any(), (
            f"{when}: {int(revived.sum())} pruned weights of {name} are no longer zero (largest "
            f"|w| {float(parameters[name].detach()[~mask].abs().max()):.3g}). Zeroing gradients is not "
            "enough with AdamW: its moment estimates move them; multiply the weights by their masks "
            "after optimizer.step()")


def assert_same_parameters(model, reference, when, rtol=1e-4, atol=1e-6):
    expected = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.detach(), expected[name].detach(), rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{when}: {name} differs from one optimizer step "
                                                            f"on the masked-LM loss followed by the masks: {m}")


# ---------------------------------------------------------------------------------------------

@pytest.mark.task("2.7")
@pytest.mark.points(3)
def test_pruned_weights_stay_exactly_zero_over_many_adamw_steps():
    """``STEPS`` steps of AdamW(weight_decay=0.01) whose moments were filled before pruning: after every
    step each pruned weight is exactly 0, and the model follows the reference step by step."""
    model, optimizer = trained_then_pruned(fraction=0.6)
    masks = pruning_masks(model)
    assert masks, "the pruned model must have masks (test set-up)"
    reference, reference_optimizer = twin(model, optimizer)
    for step in range(STEPS):
        inputs, labels = mlm_batch()
        loss = masked_finetune_step(model, masks, inputs, labels, optimizer)
        expected = reference_step(reference, masks, inputs, labels, reference_optimizer)
        assert_pruned_stay_zero(model, masks, f"after step {step + 1}")
        assert loss == pytest.approx(expected, rel=1e-4, abs=1e-6), (
            f"step {step + 1}: return the masked-LM loss of this step (before the update): got {loss}, "
            f"expected {expected}")
    assert_same_parameters(model, reference, f"after {STEPS} steps", rtol=1e-3, atol=1e-5)


@pytest.mark.task("2.7")
@pytest.mark.points(2)
def test_one_step_discards_old_gradients_and_matches_the_reference():
    """Gradients left over from before the call are discarded (``optimizer.zero_grad()``); the loss
    is a Python float; every parameter, kept or pruned, masked or not, ends as in the reference."""
    model, optimizer = trained_then_pruned(fraction=0.4, weight_decay=0.05)
    masks = pruning_masks(model)
    reference, reference_optimizer = twin(model, optimizer)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 100  # stale gradients that must not count
    inputs, labels = mlm_batch(batch=4, length=12)
    loss = masked_finetune_step(model, masks, inputs, labels, optimizer)
    expected = reference_step(reference, masks, inputs, labels, reference_optimizer)
    assert isinstance(loss, float), f"return the loss as a Python float (float(loss)), got {type(loss).__name__}"
    assert loss == pytest.approx(expected, rel=1e-5), f"loss {loss}, expected {expected}"
    assert_pruned_stay_zero(model, masks, "after one step")
    assert_same_parameters(model, reference, "after one step")


@pytest.mark.task("2.7")
@pytest.mark.points(1)
def test_only_the_masked_parameters_are_masked():
    """A layer without a mask is trained like any other, even where it holds zeros: masks say
    which weights are pruned, not the zeros of the moment."""
    model, optimizer = trained_then_pruned(fraction=0.5)
    masks = pruning_masks(model)
    unmasked = sorted(masks)[int(torch.randint(0, len(masks), (1,)))]
    del masks[unmasked]
    reference, reference_optimizer = twin(model, optimizer)
    for _ in range(3):
        inputs, labels = mlm_batch()
        masked_finetune_step(model, masks, inputs, labels, optimizer)
        reference_step(reference, masks, inputs, labels, reference_optimizer)
    assert_pruned_stay_zero(model, masks, "after 3 steps")
    parameter = dict(model.named_parameters())[unmasked].detach()
    assert (parameter != 0).float().mean() > 0.9, (
        f"{unmasked} has no mask, so its zeros are trained like any weight; only "
        f"{float((parameter != 0).float().mean()):.0%} of it is nonzero")
    assert_same_parameters(model, reference, "after 3 steps", rtol=1e-3, atol=1e-5)


@pytest.mark.task("2.7")
@pytest.mark.points(1)
def test_a_model_passed_in_eval_mode_is_trained_in_training_mode():
    """Step 1: ``model.train()``, even when the model comes in eval mode (as it does straight after an
    evaluation): dropout is on for the step, and the model is left in training mode."""
    model, optimizer = trained_then_pruned(fraction=0.3)
    masks = pruning_masks(model)
    model.eval()
    modes = []
    handle = model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    try:
        inputs, labels = mlm_batch()
        masked_finetune_step(model, masks, inputs, labels, optimizer)
    finally:
        handle.remove()
    assert modes and all(modes), (
        f"{'the forward pass ran in eval mode' if modes else 'the model never ran'}: call model.train() "
        "first (step 1), so that dropout is on while training")
    still_eval = [name for name, module in model.named_modules() if not module.training]
    assert not still_eval, f"the model must be left in training mode; in eval mode: {still_eval[:3]}"
