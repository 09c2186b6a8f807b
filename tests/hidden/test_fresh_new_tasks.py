"""Hidden tests of Exercises 1.9, 1.10 and 2.7 on inputs drawn fresh for every run (see ``conftest.py``).

Each checks a contract on random shapes and values against an oracle written here, never against
stored answers; tolerances allow any honest formulation (rounding ties, operation order).
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def _randint(fresh, low, high):
    return int(torch.randint(low, high, (1,), generator=fresh.generator))


@pytest.mark.task("1.9")
@pytest.mark.ex1_quantization
@pytest.mark.points(2)
def test_groupwise_on_fresh_inputs(fresh):
    from quantization import groupwise_dequantize, groupwise_quantize
    bits = _randint(fresh, 2, 9)
    group_size = [1, 2, 16, 32, 64, 128][_randint(fresh, 0, 6)]
    rows, groups = _randint(fresh, 1, 6), _randint(fresh, 1, 5)
    scale = float(torch.rand(1, generator=fresh.generator) * 10 + 1e-3)
    v = torch.randn(rows, groups * group_size, generator=fresh.generator) * scale
    v[_randint(fresh, 0, rows), :group_size] = 0.0  # one all-zero group
    q, alpha = groupwise_quantize(v.clone(), bits=bits, group_size=group_size)
    qmax = 2 ** (bits - 1) - 1
    context = f"bits={bits}, group_size={group_size}, shape {tuple(v.shape)} (seed {fresh.seed})"
    assert q.dtype == torch.int8 and q.shape == v.shape, context
    assert alpha.dtype == torch.float32 and tuple(alpha.shape) == (rows, groups), context
    max_abs = v.reshape(rows, groups, group_size).abs().amax(-1).clamp_min(1e-30)
    torch.testing.assert_close(alpha, qmax / max_abs, rtol=1e-5, atol=0, msg=f"alpha = qmax / max|group|: {context}")
    expected = torch.round(v * (qmax / max_abs).repeat_interleave(group_size, dim=1)).clamp(-qmax, qmax)
    assert (q.float() - expected).abs().max() <= 1 and (q.float() != expected).float().mean() < 0.01, context
    restored = groupwise_dequantize(q, alpha)
    assert torch.isfinite(restored).all(), f"an all-zero group must not give NaN: {context}"
    step = (1 / alpha).repeat_interleave(group_size, dim=1)
    assert ((restored - v).abs() <= step * 0.5 * (1 + 1e-4) + 1e-30).all(), f"round trip within half a step: {context}"


@pytest.mark.task("1.9")
@pytest.mark.ex1_quantization
@pytest.mark.points(1)
def test_groupwise_exact_halves_and_dtypes_on_fresh_inputs(fresh):
    """Groups holding +-qmax * 2^e (alpha = 2^-e exactly) and (k + 0.5) * 2^e: exact ties, to even;
    a float64 v and a float64 alpha still give float32."""
    from quantization import groupwise_dequantize, groupwise_quantize
    bits, group_size = _randint(fresh, 2, 9), _randint(fresh, 2, 10)
    groups, rows = _randint(fresh, 1, 4), _randint(fresh, 1, 4)
    qmax = 2 ** (bits - 1) - 1
    halves = torch.randint(-qmax, qmax, (rows, groups, group_size), generator=fresh.generator).double() + 0.5
    halves[..., 0] = qmax
    scales = 2.0 ** torch.randint(-10, 11, (rows, groups, 1), generator=fresh.generator).double()
    order = torch.argsort(torch.rand(rows, groups, group_size, generator=fresh.generator), dim=-1)
    v = (halves.gather(-1, order) * scales).reshape(rows, groups * group_size)
    context = f"bits={bits}, group_size={group_size}, shape {tuple(v.shape)} (seed {fresh.seed})"
    for dtype in (torch.float32, torch.float64):
        q, alpha = groupwise_quantize(v.to(dtype), bits=bits, group_size=group_size)
        assert alpha.dtype == torch.float32, f"alpha float32 for a {dtype} v: {context}"
        assert torch.equal(alpha, (1 / scales.squeeze(-1)).float()), f"alpha = qmax / max|group|: {context}"
        expected = torch.round(halves.gather(-1, order)).reshape(rows, -1)  # halves to even
        assert torch.equal(q.double(), expected), f"exact halves round to even: {context}"
        restored = groupwise_dequantize(q, alpha.double())
        assert restored.dtype == torch.float32, f"groupwise_dequantize returns float32 for a float64 alpha: {context}"


@pytest.mark.task("1.10")
@pytest.mark.ex1_quantization
@pytest.mark.points(1)
def test_kmeans_tie_and_dtype_on_fresh_inputs(fresh):
    """v = a, (a + b) / 2, b (exact in float): the middle value is half-way between the starting
    centroids and goes to the lower index; a float64 v gives a float32 codebook."""
    from quantization import kmeans_quantize
    scale = 2.0 ** _randint(fresh, -8, 9)
    low = 2 * _randint(fresh, -30, 30)
    high = low + 4 * _randint(fresh, 1, 30)
    values = torch.tensor([low, (low + high) // 2, high] + [high] * _randint(fresh, 0, 3), dtype=torch.float64) * scale
    v = values[torch.randperm(len(values), generator=fresh.generator)]
    iterations = _randint(fresh, 0, 4)
    expected = torch.tensor([low, high], dtype=torch.float64) * scale
    for _ in range(iterations):  # Lloyd, the lower index on a tie
        nearest = (v[:, None] - expected[None, :]).abs().argmin(dim=1)
        expected = torch.stack([v[nearest == c].mean() for c in range(2)])
    nearest = (v[:, None] - expected[None, :]).abs().argmin(dim=1)
    for dtype in (torch.float32, torch.float64):
        codebook, indices = kmeans_quantize(v.to(dtype), bits=1, iterations=iterations)
        context = f"v = {v.tolist()}, iterations={iterations}, {dtype} (seed {fresh.seed})"
        assert codebook.dtype == torch.float32, f"a float32 codebook: {context}"
        assert codebook.tolist() == expected.tolist() and indices.tolist() == nearest.tolist(), \
            f"half-way goes to the lower index: {context}"


@pytest.mark.task("1.10")
@pytest.mark.ex1_quantization
@pytest.mark.points(2)
def test_kmeans_on_fresh_inputs(fresh):
    from quantization import kmeans_quantize
    bits, iterations = _randint(fresh, 1, 7), _randint(fresh, 0, 25)
    shape = (_randint(fresh, 1, 10), _randint(fresh, 1, 50))
    v = torch.randn(shape, generator=fresh.generator) * float(torch.rand(1, generator=fresh.generator) * 5 + 0.01)
    codebook, indices = kmeans_quantize(v.clone(), bits=bits, iterations=iterations)
    context = f"bits={bits}, iterations={iterations}, shape {shape} (seed {fresh.seed})"
    assert codebook.dtype == torch.float32 and tuple(codebook.shape) == (2 ** bits,), context
    assert indices.dtype == torch.uint8 and indices.shape == v.shape, context
    assert torch.isfinite(codebook).all(), f"empty clusters keep their value: {context}"
    values = v.double().flatten()
    distances = (values[:, None] - codebook.double()[None, :]).abs()
    chosen = distances.gather(1, indices.long().flatten()[:, None]).squeeze(1)
    span = float(values.max() - values.min()) + 1e-30
    assert (chosen <= distances.min(1).values + 1e-6 * span).all(), f"nearest centroid indices: {context}"
    grid = torch.linspace(float(values.min()), float(values.max()), 2 ** bits, dtype=torch.float64)
    uniform = float((values[:, None] - grid[None, :]).abs().min(1).values.pow(2).sum())
    error = float(chosen.pow(2).sum())
    assert error <= uniform * (1 + 1e-5) + values.numel() * 4e-7 * float(values.abs().max()) * (float(values.max() - values.min()) + float(values.abs().max())), f"error {error:.6g} above the uniform grid's {uniform:.6g}: {context}"
    if iterations == 0:
        torch.testing.assert_close(codebook.double(), grid, rtol=0, atol=1e-6 * span, msg=context)
    elif values.numel() >= 2 ** bits * 4 and iterations >= 5:
        assert error < uniform, f"Lloyd's iterations must improve on the grid here: {context}"
    torch.testing.assert_close(kmeans_quantize(v.clone(), bits=bits, iterations=iterations)[0], codebook,
                               rtol=0, atol=0, msg=f"deterministic: {context}")


@pytest.mark.task("2.7")
@pytest.mark.ex2_pruning
@pytest.mark.points(2)
@pytest.mark.usefixtures("one_thread")
def test_masked_finetune_on_fresh_inputs(fresh):
    from given.models import random_bert
    from given.pruning_tools import pruning_masks
    from pruning import masked_finetune_step
    vocab = _randint(fresh, 50, 400)
    model = random_bert(seed=fresh.seed, vocab_size=vocab, num_hidden_layers=_randint(fresh, 1, 3), hidden_size=32,
                        num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    lr = float(torch.rand(1, generator=fresh.generator) * 1e-2 + 1e-4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    def batch():
        batch_size, length = _randint(fresh, 1, 4), _randint(fresh, 4, 12)
        input_ids = torch.randint(0, vocab, (batch_size, length), generator=fresh.generator)
        labels = torch.where(torch.rand(batch_size, length, generator=fresh.generator) < 0.4,
                             torch.randint(0, vocab, (batch_size, length), generator=fresh.generator), -100)
        labels[0, 0] = 1
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}, labels

    model.train()
    for _ in range(2):  # the moments fill before pruning
        inputs, labels = batch()
        optimizer.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
    fraction = float(torch.rand(1, generator=fresh.generator) * 0.8 + 0.1)
    with torch.no_grad():
        for module in model.bert.encoder.modules():
            if isinstance(module, nn.Linear):
                threshold = module.weight.abs().flatten().kthvalue(max(1, round(fraction * module.weight.numel()))).values
                module.weight.mul_(module.weight.abs() > threshold)
    masks = pruning_masks(model)
    reference = copy.deepcopy(model)
    reference_optimizer = torch.optim.AdamW(reference.parameters())
    reference_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    steps = _randint(fresh, 5, 15)
    for step in range(steps):
        inputs, labels = batch()
        if step == 0:
            model.eval()  # as after an evaluation: step 1 of the contract puts it in training mode
        loss = masked_finetune_step(model, masks, inputs, labels, optimizer)
        assert all(module.training for module in model.modules()), \
            f"step {step}: the model must be left in training mode (seed {fresh.seed})"
        reference.train()
        reference_optimizer.zero_grad()
        logits = reference(**inputs).logits
        expected = F.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1), ignore_index=-100)
        expected.backward()
        reference_optimizer.step()
        with torch.no_grad():
            for name, parameter in reference.named_parameters():
                if name in masks:
                    parameter.mul_(masks[name])
        assert loss == pytest.approx(expected.item(), rel=1e-4, abs=1e-6), f"step {step}: loss (seed {fresh.seed})"
        parameters = dict(model.named_parameters())
        for name, mask in masks.items():
            assert (parameters[name].detach()[~mask] == 0).all(), f"step {step}: {name} revived (seed {fresh.seed})"
    for (name, parameter), (_, expected) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(parameter.detach(), expected.detach(), rtol=1e-3, atol=1e-5,
                                   msg=f"{name} after {steps} steps (seed {fresh.seed})")
