"""Hidden tests on inputs drawn fresh for every run (see ``conftest.py``).

Each checks a contract of the exercise on random shapes and values, against an oracle written
here, never against stored answers. Tolerances allow any honest formulation (rounding ties,
operation order); answers recorded from the public tests fail.
"""
import pytest
import torch
import torch.nn.functional as F


def _randint(fresh, low, high):
    return int(torch.randint(low, high, (1,), generator=fresh.generator))


def _distinct_weights(fresh, shape):
    """Weights with distinct |w| (no ties, so the pruned set is unique)."""
    count = torch.Size(shape).numel()
    magnitudes = (torch.randperm(count, generator=fresh.generator).float() + 1) / count
    signs = torch.randint(0, 2, (count,), generator=fresh.generator).float() * 2 - 1
    return (magnitudes * signs).reshape(shape)


@pytest.mark.task("1.1")
@pytest.mark.ex1_quantization
@pytest.mark.points(2)
@pytest.mark.parametrize("dim", [None, 0, 1])
def test_absmax_on_fresh_inputs(fresh, dim):
    from quantization import absmax_quantize
    shape = (_randint(fresh, 2, 9), _randint(fresh, 2, 40))
    v = torch.randn(shape, generator=fresh.generator) * float(torch.rand(1, generator=fresh.generator) * 10 + 0.01)
    q, alpha = absmax_quantize(v.clone(), dim=dim)
    assert q.dtype == torch.int8 and q.shape == v.shape, f"seed {fresh.seed}"
    max_abs = v.abs().amax() if dim is None else v.abs().amax(dim=dim, keepdim=True)
    expected_alpha = 127 / max_abs
    torch.testing.assert_close(torch.as_tensor(alpha, dtype=torch.float32).expand_as(max_abs),
                               expected_alpha.float(), rtol=1e-5, atol=0,
                               msg=f"alpha = 127 / max|v| (seed {fresh.seed})")
    expected = torch.round(v * expected_alpha)
    assert (q.float() - expected).abs().max() <= 1, f"q = round(v * alpha) (seed {fresh.seed})"
    assert q.abs().amax() == 127, f"the largest |v| maps to 127 (seed {fresh.seed})"


@pytest.mark.task("1.3")
@pytest.mark.ex1_quantization
@pytest.mark.points(1)
def test_fp16_on_fresh_inputs(fresh):
    from quantization import fp16_quantize
    v = torch.randn(_randint(fresh, 3, 300), generator=fresh.generator) * 100
    assert torch.equal(fp16_quantize(v.clone()), v.to(torch.float16)), f"seed {fresh.seed}"


@pytest.mark.task("2.1")
@pytest.mark.ex2_pruning
@pytest.mark.points(2)
def test_magnitude_mask_on_fresh_inputs(fresh):
    from pruning import magnitude_mask
    weight = _distinct_weights(fresh, (_randint(fresh, 2, 20), _randint(fresh, 2, 30)))
    fraction = float(torch.rand(1, generator=fresh.generator))
    mask = magnitude_mask(weight.clone(), fraction)
    count = round(fraction * weight.numel())
    assert mask.dtype == torch.bool and mask.shape == weight.shape, f"seed {fresh.seed}"
    assert int((~mask).sum()) == count, f"prunes round(p * n) = {count} (seed {fresh.seed})"
    if 0 < count < weight.numel():
        assert weight.abs()[~mask].max() < weight.abs()[mask].min(), \
            f"the smallest |w| are pruned (seed {fresh.seed})"


@pytest.mark.task("2.4")
@pytest.mark.ex2_pruning
@pytest.mark.points(1)
def test_nm_mask_on_fresh_inputs(fresh):
    from pruning import nm_sparsity_mask
    rows, groups = _randint(fresh, 1, 12), _randint(fresh, 1, 10)
    weight = _distinct_weights(fresh, (rows, 4 * groups))
    mask = nm_sparsity_mask(weight.clone(), 2, 4)
    expected = torch.zeros(rows, groups, 4, dtype=torch.bool).scatter_(
        -1, weight.abs().reshape(rows, groups, 4).topk(2, dim=-1).indices, True).reshape(rows, -1)
    assert torch.equal(mask, expected), f"keep the 2 largest |w| of every 4 (seed {fresh.seed})"


@pytest.mark.task("3.1")
@pytest.mark.ex3_distillation
@pytest.mark.points(2)
@pytest.mark.parametrize("masked", [False, True])
def test_distillation_loss_on_fresh_inputs(fresh, masked):
    from distillation import compute_distillation_loss
    batch, length, classes = _randint(fresh, 1, 5), _randint(fresh, 2, 7), _randint(fresh, 2, 30)
    student = torch.randn(batch, length, classes, generator=fresh.generator) * 3
    teacher = torch.randn(batch, length, classes, generator=fresh.generator) * 3
    temperature = float(torch.rand(1, generator=fresh.generator) * 4 + 0.5)
    mask = torch.rand(batch, length, generator=fresh.generator) > 0.3 if masked else None
    if mask is not None:
        mask[0, 0] = True
    loss = compute_distillation_loss(student.clone(), teacher.clone(), temperature, mask=mask)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    per_token = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    expected = (per_token[mask] if mask is not None else per_token).mean() * temperature ** 2
    torch.testing.assert_close(torch.as_tensor(loss, dtype=torch.float32), expected, rtol=1e-4, atol=1e-5,
                               msg=f"T^2 KL(teacher || student), mean over counted tokens "
                                   f"(seed {fresh.seed})")


@pytest.mark.task("3.1")
@pytest.mark.ex3_distillation
@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_distillation_loss_of_low_precision_logits_on_fresh_inputs(fresh, dtype):
    from distillation import compute_distillation_loss
    batch, length, classes = _randint(fresh, 1, 5), _randint(fresh, 2, 7), _randint(fresh, 20, 60)
    student = (torch.randn(batch, length, classes, generator=fresh.generator) * 3).to(dtype)
    teacher = (torch.randn(batch, length, classes, generator=fresh.generator) * 3).to(dtype)
    temperature = float(_randint(fresh, 1, 5))
    loss = compute_distillation_loss(student.clone(), teacher.clone(), temperature)
    log_p_teacher = F.log_softmax(teacher.double() / temperature, dim=-1)
    log_p_student = F.log_softmax(student.double() / temperature, dim=-1)
    expected = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean() * temperature ** 2
    assert loss.dtype == torch.float32, f"a float32 scalar for {dtype} logits (seed {fresh.seed})"
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-6,
                               msg=f"{dtype} logits: softmax and KL in float32, upcast first (seed {fresh.seed})")
