"""Autograder for Exercises 1.9 and 1.10 (quantization.py): group-wise and k-means quantization.

References are written here, independently of the module: group-wise absmax restated in NumPy one
group at a time, and Lloyd's k-means restated in NumPy float64 (``reference_kmeans``). Inputs come
from the run's seed (``run_seed()``) or from hypothesis; the hand-worked examples are worth no
points, their seeded twins carry them. The argument checks (given code) are tested in test_given.py.
"""
import numpy as np
import pytest
import torch
from hypothesis import strategies as st

from quantization import groupwise_dequantize, groupwise_quantize, kmeans_quantize
from tests.properties import float_tensors, property_test

pytestmark = pytest.mark.ex1_quantization


# ---------------------------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------------------------

def reference_groupwise(v, bits, group_size):
    """``(q, alpha, pre_round)`` of group-wise absmax, one group at a time in NumPy float32.
    ``pre_round`` is ``v * alpha`` before rounding (to tell the rounding ties apart)."""
    values = v.numpy().astype(np.float32)
    qmax = np.float32(2 ** (bits - 1) - 1)
    rows, columns = values.shape
    q = np.zeros((rows, columns), np.int64)
    pre_round = np.zeros((rows, columns), np.float32)
    alpha = np.zeros((rows, columns // group_size), np.float32)
    for i in range(rows):
        for g in range(columns // group_size):
            group = values[i, g * group_size:(g + 1) * group_size]
            alpha[i, g] = qmax / max(np.abs(group).max(), np.float32(1e-30))
            scaled = group * alpha[i, g]
            pre_round[i, g * group_size:(g + 1) * group_size] = scaled
            q[i, g * group_size:(g + 1) * group_size] = np.clip(np.rint(scaled), -qmax, qmax)
    return q, alpha, pre_round


def assert_groupwise_matches(v, bits, group_size, what=""):
    q, alpha = groupwise_quantize(v.clone(), bits=bits, group_size=group_size)
    expected_q, expected_alpha, pre_round = reference_groupwise(v, bits, group_size)
    rows, columns = v.shape
    context = f"{what} v of shape {tuple(v.shape)}, bits={bits}, group_size={group_size}"
    assert q.dtype == torch.int8 and tuple(q.shape) == (rows, columns), (
        f"{context}: q must be int8 of v's shape {(rows, columns)}, got {q.dtype} {tuple(q.shape)}")
    assert isinstance(alpha, torch.Tensor) and alpha.dtype == torch.float32 \
        and tuple(alpha.shape) == (rows, columns // group_size), (
            f"{context}: alpha must be float32 of shape (n, k // group_size) = {(rows, columns // group_size)}, "
            f"got {getattr(alpha, 'dtype', type(alpha))} {tuple(getattr(alpha, 'shape', ()))}")
    assert torch.isfinite(alpha).all(), f"{context}: alpha must be finite (an all-zero group too)"
    np.testing.assert_allclose(alpha.numpy(), expected_alpha, rtol=1e-6, atol=0,
                               err_msg=f"{context}: alpha = qmax / max|group| with qmax = 2 ** (bits - 1) - 1 "
                                       f"= {2 ** (bits - 1) - 1}, one per group of {group_size} along each row")
    # Values within a hair of a rounding tie may round either way under another operation order.
    tie = np.abs(np.abs(pre_round - np.trunc(pre_round)) - 0.5) < 1e-4
    difference = np.abs(q.numpy().astype(np.int64) - expected_q)
    wrong = (difference > 0) & ~tie | (difference > 1)
    assert not wrong.any(), (
        f"{context}: q = clamp(round(v * alpha), -qmax, qmax) differs at {int(wrong.sum())} of {q.numel()} "
        f"positions, first at {tuple(int(i) for i in np.argwhere(wrong)[0])}: got "
        f"{int(q.numpy()[tuple(np.argwhere(wrong)[0])])}, expected {int(expected_q[tuple(np.argwhere(wrong)[0])])}")
    return q, alpha


def random_weight(rows, columns):
    """Gaussian weights with a few outliers ten times larger (as trained layers have)."""
    weight = torch.randn(rows, columns)
    outliers = torch.rand(rows, columns) < 0.02
    return torch.where(outliers, weight * 10, weight)


def reference_kmeans(v, bits, iterations):
    """Lloyd's k-means in NumPy float64, as the docstring states it: ``(codebook, margin)``.

    ``margin`` is the smallest gap, over every assignment made, between a value's nearest and
    second-nearest centroid, relative to the range: where it is tiny, float32 rounding may assign
    that value either way, and the trajectory is not determined by the contract alone."""
    values = v.numpy().astype(np.float64).ravel()
    count = 2 ** bits
    codebook = np.linspace(values.min(), values.max(), count)
    span = max(values.max() - values.min(), 1e-30)
    margin = np.inf
    for _ in range(iterations + 1):
        distances = np.abs(values[:, None] - codebook[None, :])
        nearest = distances.argmin(axis=1)
        if count > 1:
            ordered = np.sort(distances, axis=1)
            distinct = ordered[:, 1] > ordered[:, 0] + 1e-12 * span  # equal centroids tie harmlessly
            gaps = (ordered[:, 1] - ordered[:, 0])[distinct]
            margin = min(margin, gaps.min() / span if gaps.size else np.inf)
        if _ == iterations:
            break
        for c in range(count):
            members = values[nearest == c]
            if members.size:
                codebook[c] = members.mean()
    return codebook, margin


def squared_error(v, codebook, indices):
    return float(((codebook.double()[indices.long()] - v.double()) ** 2).sum())


def uniform_grid_error(v, bits):
    """Squared error of rounding every value to the nearest of 2**bits points evenly spaced from
    min(v) to max(v) (float64)."""
    values = v.double().flatten()
    grid = torch.linspace(float(values.min()), float(values.max()), 2 ** bits, dtype=torch.float64)
    return float((values[:, None] - grid[None, :]).abs().min(dim=1).values.pow(2).sum())


def check_kmeans_output(v, bits, codebook, indices, what=""):
    context = f"{what} v of shape {tuple(v.shape)}, bits={bits}"
    assert isinstance(codebook, torch.Tensor) and codebook.dtype == torch.float32 \
        and tuple(codebook.shape) == (2 ** bits,), (
            f"{context}: codebook must be float32 of shape (2 ** bits,) = ({2 ** bits},), got "
            f"{getattr(codebook, 'dtype', type(codebook))} {tuple(getattr(codebook, 'shape', ()))}")
    assert isinstance(indices, torch.Tensor) and indices.dtype == torch.uint8 and indices.shape == v.shape, (
        f"{context}: indices must be uint8 of v's shape, got {getattr(indices, 'dtype', type(indices))} "
        f"{tuple(getattr(indices, 'shape', ()))}")
    assert torch.isfinite(codebook).all(), f"{context}: the codebook holds NaN or inf: {codebook.tolist()}"
    values = v.double().flatten()
    distances = (values[:, None] - codebook.double()[None, :]).abs()
    chosen = distances.gather(1, indices.long().flatten()[:, None]).squeeze(1)
    span = float(values.max() - values.min())
    far = chosen > distances.min(dim=1).values + 1e-6 * span + 2e-7 * float(values.abs().max()) + 1e-30
    assert not far.any(), (
        f"{context}: every value must get the index of its nearest centroid (step 3): {int(far.sum())} do not, "
        f"e.g. {float(values[far][0]):.6g} -> centroid {float(codebook[indices.flatten()[far][0].long()]):.6g}")


# ---------------------------------------------------------------------------------------------
# Exercise 1.9: group-wise quantization
# ---------------------------------------------------------------------------------------------

@pytest.mark.task("1.9")
@pytest.mark.worked_example(twin="test_groupwise_matches_reference_on_seeded_weights")
@pytest.mark.points(0)
def test_groupwise_worked_example():
    q, alpha = groupwise_quantize(torch.tensor([[0.5, -1.0, 2.0, 0.25]]), bits=4, group_size=2)
    assert q.tolist() == [[4, -7, 7, 1]], "groups [0.5, -1] (alpha 7) and [2, 0.25] (alpha 3.5): q = [[4, -7, 7, 1]]"
    assert alpha.tolist() == [[7.0, 3.5]]


@pytest.mark.task("1.9")
@pytest.mark.points(3)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_groupwise_matches_reference_on_seeded_weights(bits):
    """Several rows, several groups, sizes from 1 to 128, with an all-zero group and outliers."""
    for group_size, groups in [(1, 5), (3, 4), (32, 3), (128, 2)]:
        rows = int(torch.randint(1, 6, (1,)))
        v = random_weight(rows, group_size * groups)
        v[-1, :group_size] = 0.0  # an all-zero group
        q, alpha = assert_groupwise_matches(v, bits, group_size, "seeded")
        qmax = 2 ** (bits - 1) - 1
        assert int(q.abs().max()) == qmax, f"bits={bits}: the largest |v| of a group maps to qmax = {qmax}"


@pytest.mark.task("1.9")
@pytest.mark.points(2)
@pytest.mark.parametrize("bits", [2, 8])
def test_groupwise_all_zero_group_gives_zeros_not_nan(bits):
    v = torch.randn(3, 12)
    v[1, 4:8] = 0.0
    v[2] = 0.0
    q, alpha = assert_groupwise_matches(v, bits, 4, "with all-zero groups,")
    restored = groupwise_dequantize(q, alpha)
    assert torch.equal(restored[1, 4:8], torch.zeros(4)) and torch.equal(restored[2], torch.zeros(12)), (
        "an all-zero group must dequantize to exact zeros (clamp max|group| with SMALLEST_RANGE), "
        f"got {restored[2].tolist()}")


@pytest.mark.task("1.9")
@pytest.mark.points(1)
def test_groupwise_with_one_group_per_row_is_per_row_absmax_int8():
    """group_size = k at 8 bits: one absmax scale per row, 127 / max|row| (the 1.1 convention)."""
    v = random_weight(int(torch.randint(2, 7, (1,))), 48)
    q, alpha = groupwise_quantize(v.clone(), bits=8, group_size=48)
    expected_alpha = 127 / v.abs().amax(dim=1, keepdim=True)
    torch.testing.assert_close(alpha, expected_alpha, rtol=1e-6, atol=0,
                               msg="one group per row: alpha = 127 / max|row|, shape (n, 1)")
    assert ((q.float() - torch.round(v * expected_alpha)).abs() <= 1).all()


@pytest.mark.task("1.9")
@pytest.mark.points(2)
def test_groupwise_dequantize_divides_each_value_by_its_group_scale():
    rows, groups, group_size = int(torch.randint(1, 5, (1,))), int(torch.randint(1, 5, (1,))), 8
    q = torch.randint(-7, 8, (rows, groups * group_size), dtype=torch.int8)
    alpha = torch.rand(rows, groups) * 10 + 0.1
    restored = groupwise_dequantize(q.clone(), alpha.clone())
    expected = np.zeros((rows, groups * group_size), np.float32)
    for i in range(rows):
        for j in range(groups * group_size):
            expected[i, j] = np.float32(q[i, j]) / np.float32(alpha[i, j // group_size])
    assert restored.dtype == torch.float32 and restored.shape == q.shape, (
        f"dequantize returns float32 of q's shape, got {restored.dtype} {tuple(restored.shape)}")
    np.testing.assert_allclose(restored.numpy(), expected, rtol=1e-6, atol=0,
                               err_msg="q[i, j] / alpha[i, j // group_size], with group_size = k // groups")


@pytest.mark.task("1.9")
@pytest.mark.points(2)
@property_test(st.integers(2, 8), st.sampled_from([1, 2, 3, 4, 8]), st.integers(1, 4), st.data())
def test_groupwise_property_round_trip_error_is_half_a_step(bits, group_size, groups, data):
    """On values full of ties, zeros and halves: the reference's q and alpha, and every value
    restored within half a quantization step of its group (1 / (2 alpha))."""
    rows = data.draw(st.integers(1, 4))
    v = data.draw(float_tensors(shape=(rows, group_size * groups)))
    q, alpha = assert_groupwise_matches(v, bits, group_size, "hypothesis")
    restored = groupwise_dequantize(q, alpha)
    step = (1 / alpha.double()).repeat_interleave(group_size, dim=1)
    error = (restored.double() - v.double()).abs()
    assert (error <= step / 2 * (1 + 1e-5) + 1e-30).all(), (
        f"bits={bits}, group_size={group_size}: restored values must be within half a step of v; worst "
        f"error {float((error / step).max()):.3f} steps")


def exact_halves(rows, groups, group_size, bits):
    """``(v, alpha)``: every group holds +-qmax * 2^e (so alpha = 2^-e exactly) and values
    (k + 0.5) * 2^e, so v * alpha is exactly half-way between two integers."""
    qmax = 2 ** (bits - 1) - 1
    v, alpha = torch.zeros(rows, groups * group_size), torch.zeros(rows, groups)
    for i in range(rows):
        for g in range(groups):
            scale = 2.0 ** int(torch.randint(-12, 13, (1,)))
            k = torch.randint(-qmax, qmax, (group_size,)).double() + 0.5
            k[int(torch.randint(0, group_size, (1,)))] = qmax * (1 if torch.rand(1) < 0.5 else -1)
            v[i, g * group_size:(g + 1) * group_size] = (k * scale).float()
            alpha[i, g] = 1 / scale
    return v, alpha


@pytest.mark.task("1.9")
@pytest.mark.points(1)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_groupwise_rounds_exact_halves_to_even(bits):
    """alpha a power of two: v * alpha is exact, and every value but the group's largest is a tie."""
    group_size = int(torch.randint(2, 9, (1,)))
    groups, rows = int(torch.randint(1, 4, (1,))), int(torch.randint(1, 4, (1,)))
    v, expected_alpha = exact_halves(rows, groups, group_size, bits)
    q, alpha = groupwise_quantize(v.clone(), bits=bits, group_size=group_size)
    expected_q = np.rint(v.numpy().astype(np.float64) * np.repeat(expected_alpha.numpy(), group_size, axis=1))
    assert torch.equal(alpha, expected_alpha), f"alpha = qmax / max|group|, exactly a power of two here"
    wrong = q.numpy() != expected_q
    assert not wrong.any(), (
        f"bits={bits}, group_size={group_size}: v * alpha is exactly k + 0.5 here, and torch.round sends "
        f"halves to even (2.5 -> 2, 3.5 -> 4, -0.5 -> 0); {int(wrong.sum())} values differ, e.g. "
        f"v * alpha = {float((v * alpha.repeat_interleave(group_size, 1))[torch.from_numpy(wrong)][0])} gave "
        f"{int(q[torch.from_numpy(wrong)][0])}")


@pytest.mark.task("1.9")
@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_groupwise_returns_float32_for_any_float_dtype(dtype):
    """A float64, float16 or bfloat16 v (with an all-zero group) gives a finite float32 alpha, and
    groupwise_dequantize returns float32 for any float alpha."""
    group_size = int(torch.randint(1, 5, (1,)))
    v = random_weight(3, 4 * group_size)
    v[1, :group_size] = 0.0
    v = v.to(dtype)
    q, alpha = groupwise_quantize(v.clone(), bits=4, group_size=group_size)
    context = f"v of dtype {dtype}, group_size={group_size}"
    assert alpha.dtype == torch.float32 and torch.isfinite(alpha).all(), (
        f"{context}: alpha must be finite float32 (compute in float32), got {alpha.dtype} {alpha.tolist()}")
    expected_q, expected_alpha, _ = reference_groupwise(v.float(), 4, group_size)
    np.testing.assert_allclose(alpha.numpy(), expected_alpha, rtol=1e-6, err_msg=context)
    assert (np.abs(q.numpy() - expected_q) <= 1).all(), context
    for alpha_dtype in (torch.float64, torch.float16):
        restored = groupwise_dequantize(q, alpha.to(alpha_dtype))
        assert restored.dtype == torch.float32, (
            f"groupwise_dequantize(q, alpha of dtype {alpha_dtype}) must return float32, got {restored.dtype}")
        np.testing.assert_allclose(restored.numpy(), q.numpy() / np.repeat(
            alpha.to(alpha_dtype).double().numpy(), group_size, axis=1), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Exercise 1.10: k-means quantization
# ---------------------------------------------------------------------------------------------

@pytest.mark.task("1.10")
@pytest.mark.worked_example(twin="test_kmeans_empty_clusters_keep_their_value_on_seeded_values")
@pytest.mark.points(0)
def test_kmeans_worked_example_empty_clusters_keep_their_value():
    codebook, indices = kmeans_quantize(torch.tensor([0.0, 0.0, 0.0, 1.0]), bits=2, iterations=3)
    torch.testing.assert_close(codebook, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]),
                               msg="the two middle clusters are empty: their centroids keep 1/3 and 2/3")
    assert indices.tolist() == [0, 0, 0, 3]


def unambiguous_values(shape, bits, iterations, tries=20):
    """Seeded weights whose k-means trajectory does not hinge on a float32 rounding (redrawn, from
    the same seeded generator, in the rare case that some value sits on a cluster boundary)."""
    for _ in range(tries):
        v = random_weight(*shape)
        codebook, margin = reference_kmeans(v, bits, iterations)
        if margin > 1e-5:
            return v, codebook
    raise AssertionError("no unambiguous draw in 20 tries")


@pytest.mark.task("1.10")
@pytest.mark.points(3)
@pytest.mark.parametrize("bits, iterations", [(1, 5), (2, 1), (3, 20), (4, 2), (4, 20)])
def test_kmeans_matches_lloyd_reference_on_seeded_weights(bits, iterations):
    shape = (int(torch.randint(3, 9, (1,))), int(torch.randint(20, 60, (1,))))
    v, expected = unambiguous_values(shape, bits, iterations)
    codebook, indices = kmeans_quantize(v.clone(), bits=bits, iterations=iterations)
    check_kmeans_output(v, bits, codebook, indices, "seeded")
    span = float(v.max() - v.min())
    np.testing.assert_allclose(codebook.numpy(), expected, rtol=0, atol=1e-5 * span,
                               err_msg=f"bits={bits}, iterations={iterations}: the codebook after Lloyd's "
                                       f"iterations from the even grid min(v)..max(v) (reference in float64)")


@pytest.mark.task("1.10")
@pytest.mark.points(2)
@pytest.mark.parametrize("bits", [2, 8])
def test_kmeans_empty_clusters_keep_their_value_on_seeded_values(bits):
    """Two distinct values, a < b: the end centroids move onto them (they already are), every
    centroid between them loses its cluster and keeps its grid value; with 8 bits and few values
    most clusters are empty from the start."""
    low, high = sorted((torch.randn(2) * 3).tolist())
    v = torch.tensor([low] * int(torch.randint(1, 6, (1,))) + [high] * int(torch.randint(1, 6, (1,))))
    v = v[torch.randperm(len(v))]
    codebook, indices = kmeans_quantize(v.clone(), bits=bits, iterations=int(torch.randint(1, 10, (1,))))
    check_kmeans_output(v, bits, codebook, indices, "two values,")
    grid = torch.linspace(low, high, 2 ** bits)
    torch.testing.assert_close(codebook, grid, rtol=0, atol=1e-6 * (high - low) + 2e-7 * max(abs(low), abs(high)),
                               msg=f"values {low:.4g} and {high:.4g}: centroids of empty clusters keep their "
                                   "evenly spaced start value (not NaN, not 0)")
    assert torch.equal(indices, torch.where(v == low, 0, 2 ** bits - 1).to(torch.uint8)), (
        f"values {low:.4g} and {high:.4g}: indices 0 and {2 ** bits - 1}, got {indices.tolist()}")


@pytest.mark.task("1.10")
@pytest.mark.points(1)
def test_kmeans_with_no_iteration_is_the_uniform_grid():
    v = random_weight(5, 17)
    bits = int(torch.randint(1, 6, (1,)))
    codebook, indices = kmeans_quantize(v.clone(), bits=bits, iterations=0)
    check_kmeans_output(v, bits, codebook, indices, "iterations=0,")
    torch.testing.assert_close(codebook, torch.linspace(float(v.min()), float(v.max()), 2 ** bits),
                               msg="the start: 2 ** bits centroids evenly spaced from min(v) to max(v), both included")


@pytest.mark.task("1.10")
@pytest.mark.points(1)
def test_kmeans_is_deterministic_and_leaves_v_alone():
    v = random_weight(4, 33)
    before = v.clone()
    first = kmeans_quantize(v, bits=3, iterations=10)
    second = kmeans_quantize(v, bits=3, iterations=10)
    assert torch.equal(v, before), "kmeans_quantize must not change v"
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1]), (
        "two calls on the same v must give the same codebook and indices (no random initialisation)")
    check_kmeans_output(v, 3, *first)
    assert squared_error(v, *first) < uniform_grid_error(v, 3), "10 iterations must improve on the uniform grid here"


@pytest.mark.task("1.10")
@pytest.mark.points(3)
@property_test(st.integers(1, 8), st.integers(0, 12), float_tensors(min_dims=1, max_dims=3, max_side=7))
def test_kmeans_property_never_worse_than_the_uniform_grid(bits, iterations, v):
    """Ties, zeros, constant tensors, single values: shapes and dtypes, nearest indices, a finite
    codebook, and a squared error never above the uniform grid it starts from."""
    codebook, indices = kmeans_quantize(v.clone(), bits=bits, iterations=iterations)
    check_kmeans_output(v, bits, codebook, indices, "hypothesis")
    error, grid = squared_error(v, codebook, indices), uniform_grid_error(v, bits)
    # float32 centroids (and so the midpoints between them) sit an ulp or so off the grid's: a value
    # near a midpoint may go to either neighbour, changing its squared error by ~ulp x spacing.
    rounding = v.numel() * 4e-7 * float(v.abs().max()) * (float(v.max() - v.min()) + float(v.abs().max()))
    assert error <= grid * (1 + 1e-5) + rounding + 1e-30, (
        f"bits={bits}, iterations={iterations}: squared error {error:.6g} is above the uniform grid's {grid:.6g}")
    values, ulp = v.flatten(), 2e-7 * float(v.abs().max()) + 1e-30
    assert float(codebook.min()) >= float(values.min()) - ulp and float(codebook.max()) <= float(values.max()) + ulp, (
        "every centroid starts within [min(v), max(v)] and a mean of values never leaves it")


@pytest.mark.task("1.10")
@pytest.mark.points(1)
@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_kmeans_sends_a_value_half_way_to_the_lower_index(iterations):
    """v = a, (a + b) / 2, b, maybe b again (small integers times a power of two: every mean and
    midpoint exact);
    the middle value is half-way between the two starting centroids, and goes to index 0."""
    scale = 2.0 ** int(torch.randint(-8, 9, (1,)))
    low = 2 * int(torch.randint(-20, 20, (1,)))
    high = low + 4 * int(torch.randint(1, 20, (1,)))
    middle = (low + high) // 2
    extra = [high] * int(torch.randint(0, 3, (1,)))  # copies of high: its mean stays exact
    values = [low, middle, high] + extra
    order = torch.randperm(len(values)).tolist()
    v = torch.tensor([values[i] * scale for i in order])
    codebook, indices = kmeans_quantize(v.clone(), bits=1, iterations=iterations)
    expected = np.array([low, high], np.float64) * scale
    for _ in range(iterations):  # Lloyd in float64, lower index on a tie (argmin)
        nearest = np.abs(v.numpy()[:, None].astype(np.float64) - expected[None, :]).argmin(axis=1)
        expected = np.array([v.numpy()[nearest == c].mean() for c in range(2)])
    nearest = np.abs(v.numpy()[:, None].astype(np.float64) - expected[None, :]).argmin(axis=1)
    context = f"kmeans_quantize({v.tolist()}, bits=1, iterations={iterations})"
    assert codebook.tolist() == expected.tolist() and indices.tolist() == nearest.tolist(), (
        f"{context}: {middle * scale} is exactly half-way between {low * scale} and {high * scale}: it goes "
        f"to the lower index (as argmin does); expected codebook {expected.tolist()} and indices "
        f"{nearest.tolist()}, got {codebook.tolist()} and {indices.tolist()}")


@pytest.mark.task("1.10")
@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_kmeans_returns_a_float32_codebook_for_any_float_dtype(dtype):
    """A float64 or float16 v: the same Lloyd iterations, in float32 (v's values are exact in it)."""
    bits = int(torch.randint(1, 5, (1,)))
    v, expected = unambiguous_values((3, 17), bits, 3)
    if dtype == torch.float16:
        v = v.half().float()
        expected, _ = reference_kmeans(v, bits, 3)
    codebook, indices = kmeans_quantize(v.to(dtype), bits=bits, iterations=3)
    check_kmeans_output(v, bits, codebook, indices, f"v of dtype {dtype},")
    np.testing.assert_allclose(codebook.numpy(), expected, rtol=0, atol=1e-4 * float(v.max() - v.min()),
                               err_msg=f"v of dtype {dtype}, bits={bits}, iterations=3: Lloyd's codebook")
