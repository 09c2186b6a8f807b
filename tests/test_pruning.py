"""Autograder tests for Exercise 2, pruning.py.

References are independent of the code under test: ``torch.nn.utils.prune`` applied to a deep copy
(never the same object on both sides), hand-computed masks, and for the BERT shrinking the same
model with the removed neurons/heads zeroed instead of cut out.
"""
import copy
import functools
import io

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from given.bert_surgery import load_shrunk_bert, prune_bert_ffn_neurons, prune_bert_heads, shrink_bert
from given.pruning_tools import apply_nm_pruning, prune_output_neurons, sparsity
from given.sizes import size_report
from helpers import bert_inputs, bert_output, run_seed, small_bert as seeded_small_bert
from pruning import apply_weight_pruning, nm_sparsity_mask, shrink_linear

pytestmark = pytest.mark.ex2_pruning


# --------------------------------------------------------------------------------------------
# Small models and references
# --------------------------------------------------------------------------------------------

def odd_mlp():
    """Linear(7 -> 13) and Linear(13 -> 5): 91 and 65 weights, odd counts where rounding matters.

    The second layer's weights are 10x larger, so global and local pruning choose differently.
    """
    model = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 5))
    with torch.no_grad():
        model[2].weight.mul_(10)
    return model


def linears(model):
    return [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def torch_l1_unstructured(model, fraction):
    """Reference: torch's per-layer L1 unstructured pruning on a deep copy, made permanent."""
    reference = copy.deepcopy(model)
    for _, module in linears(reference):
        prune.l1_unstructured(module, "weight", amount=fraction)
        prune.remove(module, "weight")
    return reference


def torch_global_unstructured(model, fraction):
    reference = copy.deepcopy(model)
    parameters = [(module, "weight") for _, module in linears(reference)]
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=fraction)
    for module, name in parameters:
        prune.remove(module, name)
    return reference


def torch_ln_structured_rows(model, fraction):
    reference = copy.deepcopy(model)
    for _, module in linears(reference):
        prune.ln_structured(module, "weight", amount=fraction, n=2, dim=0)
        prune.remove(module, "weight")
    return reference


def assert_same_weights(pruned, reference, what):
    """Every Linear's weight and bias in ``pruned`` equals ``reference``'s exactly."""
    expected = dict(linears(reference))
    for name, module in linears(pruned):
        ref = expected[name]
        zeros, expected_zeros = int((module.weight == 0).sum()), int((ref.weight == 0).sum())
        differ = int((module.weight != ref.weight).sum())
        assert torch.equal(module.weight, ref.weight), (
            f"{what}: layer {name!r} with {module.weight.numel()} weights should have "
            f"{expected_zeros} zeros at the smallest entries, got {zeros} zeros and {differ} weights "
            f"that differ from torch.nn.utils.prune's result")
        assert torch.equal(module.bias, ref.bias), f"{what}: layer {name!r}: the bias must not change"


# --------------------------------------------------------------------------------------------
# Exercise 2.1 / 2.2: unstructured magnitude pruning
# --------------------------------------------------------------------------------------------

@pytest.mark.task("2.1")
@pytest.mark.points(1)
@pytest.mark.parametrize("fraction", [0.2, 0.37, 0.5, 0.9])
def test_local_pruning_matches_torch_l1_unstructured(fraction):
    model = odd_mlp()
    expected = torch_l1_unstructured(model, fraction)

    returned = apply_weight_pruning(model, nn.Linear, fraction)

    assert returned is model, "apply_weight_pruning must prune in place and return the same model"
    assert_same_weights(model, expected,
                        f"apply_weight_pruning(model, nn.Linear, {fraction}) on 91 and 65 weights "
                        f"(torch prunes round({fraction} * n) per layer: "
                        f"{round(fraction * 91)} and {round(fraction * 65)})")


@pytest.mark.task("2.1")
@pytest.mark.points(1)
def test_fraction_zero_prunes_nothing_and_one_prunes_everything():
    """Both ends, with a fraction in between: doing nothing (or everything) is right only at one end."""
    for fraction in (0.0, 0.5, 1.0):
        model = odd_mlp()
        expected = torch_l1_unstructured(model, fraction)
        apply_weight_pruning(model, nn.Linear, fraction)
        assert_same_weights(model, expected, f"apply_weight_pruning(model, nn.Linear, {fraction})")


@pytest.mark.task("2.1")
@pytest.mark.points(1)
def test_biases_are_never_pruned():
    model = odd_mlp()
    with torch.no_grad():  # biases tinier than any weight: a pruner that ranks them would take them first
        for _, module in linears(model):
            module.bias.copy_(torch.linspace(1e-6, 2e-6, module.bias.numel()))
    biases = {name: module.bias.clone() for name, module in linears(model)}

    apply_weight_pruning(model, nn.Linear, 0.5)

    for name, module in linears(model):
        assert torch.equal(module.bias, biases[name]), (
            f"layer {name!r}: pruning 50% of the weights changed the bias (biases are never pruned, "
            f"even when they are tiny)")
        assert int((module.weight == 0).sum()) == round(0.5 * module.weight.numel()), (
            f"layer {name!r}: expected {round(0.5 * module.weight.numel())} zero weights")


@pytest.mark.task("2.1")
@pytest.mark.points(1)
def test_pruned_weights_are_plain_tensors_that_save_and_load():
    original = odd_mlp()
    model = copy.deepcopy(original)
    keys = list(model.state_dict())

    apply_weight_pruning(model, nn.Linear, 0.3)

    for name, module in linears(model):
        assert type(module.weight) is nn.Parameter and not hasattr(module, "weight_orig"), (
            f"layer {name!r}: after pruning, weight must be a plain nn.Parameter with the zeros in it "
            f"(no weight_orig / weight_mask re-parametrisation; call prune.remove if you used torch's)")
        assert not module._forward_pre_hooks, f"layer {name!r}: pruning must leave no forward hooks"
    assert list(model.state_dict()) == keys, f"state_dict keys changed: {list(model.state_dict())}"
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = odd_mlp()
    fresh.load_state_dict(torch.load(buffer))
    assert_same_weights(fresh, torch_l1_unstructured(original, 0.3), "reloaded pruned model")


@pytest.mark.task("2.1")
@pytest.mark.points(1)
def test_pruning_percentage_is_a_fraction_not_a_percent():
    model = odd_mlp()
    apply_weight_pruning(model, nn.Linear, 0.2)
    zeros = [int((module.weight == 0).sum()) for _, module in linears(model)]
    assert zeros == [18, 13], (f"pruning_percentage=0.2 means 20%: round(0.2*91)=18 and "
                               f"round(0.2*65)=13 zeros, got {zeros}")

    untouched = odd_mlp()
    before = copy.deepcopy(untouched.state_dict())
    with pytest.raises(ValueError, match=r"a fraction in \[0, 1\]; did you mean 0\.2\?"):
        apply_weight_pruning(untouched, nn.Linear, 20)
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\]"):
        apply_weight_pruning(untouched, nn.Linear, -0.1)
    after = untouched.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before), \
        "a rejected pruning_percentage must leave the model unchanged"


@pytest.mark.task("2.1")
@pytest.mark.points(1)
def test_only_the_requested_layer_type_is_pruned():
    model = nn.Sequential(nn.Conv1d(3, 5, kernel_size=3), nn.Flatten(), nn.Linear(5 * 6, 4))
    linear_before = model[2].weight.clone()
    reference = copy.deepcopy(model)
    prune.l1_unstructured(reference[0], "weight", amount=0.5)
    prune.remove(reference[0], "weight")

    apply_weight_pruning(model, nn.Conv1d, 0.5)

    assert torch.equal(model[0].weight, reference[0].weight), \
        "pruning nn.Conv1d at 0.5 should zero the 22 smallest of its 45 weights, as torch does"
    assert torch.equal(model[2].weight, linear_before), "pruning nn.Conv1d must not touch the nn.Linear"
    with pytest.raises(ValueError, match="Conv2d"):
        apply_weight_pruning(model, nn.Conv2d, 0.5)  # nothing matches: an error, never silence


@pytest.mark.task("2.2")
@pytest.mark.points(1)
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
def test_global_pruning_matches_torch_global_unstructured(fraction):
    model = odd_mlp()
    expected = torch_global_unstructured(model, fraction)
    local = apply_weight_pruning(copy.deepcopy(model), nn.Linear, fraction, scope="local")

    apply_weight_pruning(model, nn.Linear, fraction, scope="global")

    assert_same_weights(model, expected, f"scope='global' at {fraction} (one threshold for all "
                                         f"156 weights: {round(fraction * 156)} zeros in total)")
    zeros = [int((m.weight == 0).sum()) for _, m in linears(model)]
    local_zeros = [int((m.weight == 0).sum()) for _, m in linears(local)]
    assert zeros != local_zeros, (f"global and local pruning gave the same zeros per layer {zeros}, "
                                  f"but layer 2's weights are 10x larger, so global should take "
                                  f"more from layer 1")
    with pytest.raises(ValueError, match="scope"):
        apply_weight_pruning(model, nn.Linear, fraction, scope="globl")


# --------------------------------------------------------------------------------------------
# Exercise 2.3: structured pruning of whole output neurons (by zeroing)
# --------------------------------------------------------------------------------------------

@pytest.mark.task("2.3")
@pytest.mark.points(1)
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.75])
def test_output_neurons_match_torch_ln_structured(fraction):
    model = nn.Sequential(nn.Linear(9, 11), nn.ReLU(), nn.Linear(11, 7))
    expected = torch_ln_structured_rows(model, fraction)

    returned = prune_output_neurons(model, nn.Linear, fraction)

    assert returned is model
    assert_same_weights(model, expected,
                        f"prune_output_neurons(model, nn.Linear, {fraction}) on 11 and 7 rows "
                        f"(round({fraction}*11)={round(fraction * 11)} and "
                        f"round({fraction}*7)={round(fraction * 7)} rows of smallest L2 norm)")
    for name, module in linears(model):
        zero_rows = int((module.weight == 0).all(dim=1).sum())
        assert zero_rows == round(fraction * module.out_features), \
            f"layer {name!r}: expected {round(fraction * module.out_features)} all-zero rows, got {zero_rows}"


# --------------------------------------------------------------------------------------------
# Exercise 2.4: N:M semi-structured sparsity
# --------------------------------------------------------------------------------------------

@pytest.mark.task("2.4")
@pytest.mark.worked_example(twin="test_nm_mask_on_ties_and_both_ends")
@pytest.mark.points(0)
def test_nm_mask_on_a_hand_example():
    weight = torch.tensor([[1.0, -4.0, 3.0, 2.0, 0.5, -0.1, 0.2, 0.3],
                           [0.0, 0.0, -1.0, 0.5, -9.0, 8.0, 7.0, -6.0]])
    expected = torch.tensor([[False, True, True, False, True, False, False, True],
                             [False, False, True, True, True, True, False, False]])

    mask = nm_sparsity_mask(weight, n=2, m=4)

    assert mask.dtype == torch.bool and mask.shape == weight.shape, \
        f"expected a bool mask of shape (2, 8), got {mask.dtype} {tuple(mask.shape)}"
    assert torch.equal(mask, expected), (
        f"2:4 mask of\n{weight}\nshould keep the 2 largest |w| of each group of 4 along a row:\n"
        f"{expected}\ngot\n{mask}")


@pytest.mark.task("2.4")
@pytest.mark.points(1)
@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8)])
def test_nm_mask_keeps_the_n_largest_of_every_m(n, m):
    weight = torch.randn(6, 16)
    groups = weight.abs().reshape(6, 16 // m, m)
    expected = torch.zeros_like(groups, dtype=torch.bool)
    for row in range(groups.shape[0]):
        for group in range(groups.shape[1]):
            for position in sorted(range(m), key=lambda i: -groups[row, group, i].item())[:n]:
                expected[row, group, position] = True

    mask = nm_sparsity_mask(weight, n=n, m=m)

    assert torch.equal(mask, expected.reshape(6, 16)), (
        f"{n}:{m} mask of a (6, 16) weight: each group of {m} consecutive weights in a row must keep "
        f"exactly its {n} largest |w|; {int((mask != expected.reshape(6, 16)).sum())} entries differ")


@pytest.mark.task("2.4")
@pytest.mark.points(1)
def test_apply_nm_pruning_gives_the_2_4_pattern():
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4))
    original = copy.deepcopy(model)

    returned = apply_nm_pruning(model, nn.Linear, n=2, m=4)

    assert returned is model
    for (name, module), (_, before) in zip(linears(model), linears(original)):
        groups = module.weight.reshape(module.out_features, -1, 4)
        assert ((groups != 0).sum(dim=-1) == 2).all(), f"layer {name!r}: every group of 4 needs 2 nonzeros"
        kept = module.weight != 0
        assert torch.equal(module.weight[kept], before.weight[kept]), f"layer {name!r}: kept weights changed"
        magnitudes, kept_in_group = before.weight.abs().reshape_as(groups), groups != 0
        smallest_kept = magnitudes.masked_fill(~kept_in_group, float("inf")).min(dim=-1).values
        largest_dropped = magnitudes.masked_fill(kept_in_group, -1.0).max(dim=-1).values
        assert (smallest_kept > largest_dropped).all(), \
            f"layer {name!r}: in some group of 4 a dropped |w| is larger than a kept one"
        assert torch.equal(module.bias, before.bias), f"layer {name!r}: the bias must not change"
    assert sparsity(model, nn.Linear) == 0.5
    with pytest.raises(ValueError, match="multiple"):
        apply_nm_pruning(nn.Sequential(nn.Linear(6, 4)), nn.Linear)  # 6 inputs: not groups of 4


# --------------------------------------------------------------------------------------------
# Exercises 2.5 / 2.6: physically shrinking BERT
# --------------------------------------------------------------------------------------------

@pytest.mark.task("2.5")
@pytest.mark.points(1)
def test_shrink_linear_keeps_rows_or_columns():
    linear = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    full = linear(x).detach()

    rows = shrink_linear(copy.deepcopy(linear), torch.tensor([0, 2]), dim=0)
    assert (rows.out_features, rows.in_features) == (2, 4) and rows.weight.shape == (2, 4) \
        and rows.bias.shape == (2,), "keeping rows [0, 2] of Linear(4, 3) gives Linear(4, 2)"
    torch.testing.assert_close(rows(x), full[:, [0, 2]], msg="rows [0, 2]: outputs 0 and 2 of the full layer")

    columns = shrink_linear(copy.deepcopy(linear), torch.tensor([1, 3]), dim=1)
    assert (columns.out_features, columns.in_features) == (3, 2) and columns.bias.shape == (3,), \
        "keeping columns [1, 3] of Linear(4, 3) gives Linear(2, 3) with the whole bias"
    expected = x[:, [1, 3]] @ linear.weight[:, [1, 3]].T + linear.bias
    torch.testing.assert_close(columns(x[:, [1, 3]]), expected.detach(),
                               msg="columns [1, 3]: the layer reads only inputs 1 and 3")
    assert isinstance(columns.weight, nn.Parameter) and isinstance(rows.bias, nn.Parameter)


def small_bert(model_class=None):
    """Seeded BERT-tiny shape with 4 heads of 32 (more heads to choose from) and a 1,000-token vocabulary."""
    if model_class is None:
        return seeded_small_bert(num_attention_heads=4)
    from transformers import BertConfig
    torch.manual_seed(run_seed())  # the run's weights, not fixed ones (answers recorded from seed 0 earn nothing)
    config = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=512)
    return model_class(config).eval()


def encoder_layers(model):
    return (model.bert if hasattr(model, "bert") else model).encoder.layer


def assert_heads_left(model, heads, what, head_size=32, hidden=128):
    """Every layer's attention has ``heads`` heads of ``head_size`` left, in its counts and in the
    shapes of query/key/value and output.dense: checked before the model runs on them."""
    for index, layer in enumerate(encoder_layers(model)):
        attention, width = layer.attention.self, heads * head_size
        shapes = [tuple(attention.query.weight.shape), tuple(attention.key.weight.shape),
                  tuple(attention.value.weight.shape), tuple(layer.attention.output.dense.weight.shape)]
        assert shapes == [(width, hidden)] * 3 + [(hidden, width)], (
            f"Exercise 2.6 remove_attention_heads, {what}: layer {index} keeps {heads} heads of {head_size}, so "
            f"query/key/value must be ({width}, {hidden}) and output.dense ({hidden}, {width}); got {shapes} "
            f"(head h owns rows h*head_size up to, not including, (h+1)*head_size)")
        assert (attention.num_attention_heads, attention.attention_head_size, attention.all_head_size) \
            == (heads, head_size, width), (
            f"Exercise 2.6 remove_attention_heads, {what}: layer {index} must say {heads} heads, all_head_size "
            f"{width}; got {attention.num_attention_heads} heads, all_head_size {attention.all_head_size}")


def weakest(scores, count):
    return sorted(sorted(range(len(scores)), key=lambda i: scores[i])[:count])


def zeroed_reference(model, ffn_fraction=0.0, head_fraction=0.0):
    """Deep copy of ``model`` with the weakest FFN neurons / heads silenced by zeroing their output columns.

    Neuron i's weight norm: its row of intermediate.dense and column of output.dense. Head h's: its
    32 rows of query, key, value and its 32 columns of attention.output.dense. Returns the copy and
    the removed heads per layer.
    """
    reference = copy.deepcopy(model)
    removed_heads = {}
    for index, layer in enumerate(encoder_layers(reference)):
        w_in, w_out = layer.intermediate.dense.weight, layer.output.dense.weight
        scores = [(w_in[i].square().sum() + w_out[:, i].square().sum()).item() for i in range(w_in.shape[0])]
        neurons = weakest(scores, round(ffn_fraction * w_in.shape[0]))
        attention = layer.attention
        size, heads = 32, attention.self.num_attention_heads
        scores = []
        for h in range(heads):
            block = slice(h * size, (h + 1) * size)
            scores.append(sum(linear.weight[block].square().sum() for linear in
                              (attention.self.query, attention.self.key, attention.self.value)).item()
                          + attention.output.dense.weight[:, block].square().sum().item())
        removed_heads[index] = weakest(scores, round(head_fraction * heads))
        with torch.no_grad():
            w_out[:, neurons] = 0
            for h in removed_heads[index]:
                attention.output.dense.weight[:, h * size:(h + 1) * size] = 0
    return reference, removed_heads


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.task("2.5")
@pytest.mark.points(2)
def test_ffn_pruning_equals_zeroing_those_neurons():
    model = small_bert()
    reference, _ = zeroed_reference(model, ffn_fraction=0.4)
    inputs = bert_inputs()
    count_before = parameter_count(model)

    prune_bert_ffn_neurons(model, 0.4)

    sizes = [(layer.intermediate.dense.out_features, layer.output.dense.in_features)
             for layer in encoder_layers(model)]
    assert sizes == [(307, 307)] * 2, (f"0.4 of 512 neurons: remove round(204.8)=205, keep 307 rows of "
                                       f"intermediate.dense and columns of output.dense; got {sizes}")
    assert model.config.intermediate_size == 307, "config.intermediate_size must say 307 for reloading"
    removed = count_before - parameter_count(model)
    assert removed == 2 * 205 * (128 + 1 + 128), \
        f"each layer loses 205 x (128 weights + 1 bias in, 128 weights out) parameters; lost {removed} in all"
    torch.testing.assert_close(bert_output(model, inputs), bert_output(reference, inputs),
                               atol=1e-5, rtol=1e-5,
                               msg="the shrunk BERT must compute what the full one computes with the "
                                   "205 smallest-norm neurons per layer zeroed")


@pytest.mark.task("2.6")
@pytest.mark.points(2)
def test_head_pruning_equals_zeroing_those_heads():
    model = small_bert()
    reference, removed_heads = zeroed_reference(model, head_fraction=0.5)
    inputs = bert_inputs()

    prune_bert_heads(model, 0.5)

    assert_heads_left(model, 2, "prune_bert_heads(model, 0.5) of 4 heads")
    assert {int(k): sorted(v) for k, v in model.config.pruned_heads.items()} == removed_heads, \
        f"config.pruned_heads should record the removed heads {removed_heads}, got {model.config.pruned_heads}"
    torch.testing.assert_close(bert_output(model, inputs), bert_output(reference, inputs),
                               atol=1e-5, rtol=1e-5,
                               msg="the BERT without 2 heads per layer must compute what the full one "
                                   "computes with those heads' output columns zeroed")


@pytest.mark.task("2.6")
@pytest.mark.points(2)
def test_shrunk_bert_saves_and_reloads(tmp_path):
    model = small_bert()
    reference, _ = zeroed_reference(model, ffn_fraction=0.25, head_fraction=0.25)
    inputs = bert_inputs()

    shrink_bert(model, 0.25)
    assert_heads_left(model, 3, "shrink_bert(model, 0.25) of 4 heads")
    expected = bert_output(reference, inputs)
    torch.testing.assert_close(bert_output(model, inputs), expected, atol=1e-5, rtol=1e-5,
                               msg="shrink_bert(0.25) must equal zeroing 128 neurons and 1 head per layer")
    model.save_pretrained(tmp_path)
    reloaded = load_shrunk_bert(tmp_path)

    assert parameter_count(reloaded) == parameter_count(model), "the reloaded model must keep the shrunk shapes"
    torch.testing.assert_close(bert_output(reloaded, inputs), expected, atol=1e-5, rtol=1e-5,
                               msg="save_pretrained + load_shrunk_bert must give back the same outputs")


@pytest.mark.task("2.6")
@pytest.mark.points(1)
def test_heads_pruned_twice_are_recorded_in_original_numbering(tmp_path):
    from transformers import BertModel
    model = small_bert(BertModel)
    inputs = bert_inputs()

    prune_bert_heads(model, 0.25)  # 1 of 4 heads per layer
    prune_bert_heads(model, 0.25)  # round(0.25 * 3) = 1 of the 3 left
    assert_heads_left(model, 2, "prune_bert_heads(model, 0.25) twice, of 4 heads")
    _, removed_heads = zeroed_reference(small_bert(BertModel), head_fraction=0.5)

    assert {int(k): sorted(v) for k, v in model.config.pruned_heads.items()} == removed_heads, (
        f"two rounds each removing the weakest head should remove the 2 weakest of the original 4, "
        f"numbered as in the original model: {removed_heads}; got {model.config.pruned_heads}")
    model.save_pretrained(tmp_path)
    reloaded = load_shrunk_bert(tmp_path, BertModel)
    torch.testing.assert_close(bert_output(reloaded, inputs), bert_output(model, inputs), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Measuring: sparsity and an honest size report
# --------------------------------------------------------------------------------------------

@pytest.mark.task("2.1")
@pytest.mark.points(1)
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_size_report_tells_dense_bytes_from_csr_bytes():
    model = nn.Sequential(nn.Linear(10, 8))  # 80 weights + 8 biases, fp32
    before = size_report(model)

    apply_weight_pruning(model, nn.Linear, 0.5)
    after = size_report(model)

    weight = model[0].weight.detach().to_sparse_csr()
    real_csr = sum(t.numel() * t.element_size()
                   for t in (weight.values(), weight.col_indices(), weight.crow_indices()))
    assert after["parameters"] == before["parameters"] == 88
    assert after["nonzero_parameters"] == 88 - 40, "half of the 80 weights are zero, the biases are not"
    assert after["dense_bytes"] == before["dense_bytes"] == 88 * 4, \
        "zeros in a dense fp32 tensor still take 4 bytes each: dense_bytes must not change"
    assert after["csr_bytes"] == real_csr + 8 * 4, (
        f"CSR of the 8x10 weight with 40 nonzeros = values + int64 column indices + int64 row "
        f"pointers = {real_csr} bytes (torch's to_sparse_csr), plus 32 bytes of dense bias")
    assert sparsity(model, nn.Linear) == 0.5 and sparsity(model) == 40 / 88


# --------------------------------------------------------------------------------------------
# The edges each contract names, on inputs drawn for this run (property tests)
# --------------------------------------------------------------------------------------------
# Ties at the pruning boundary (a model pruned before is full of zeros), one element, 1-D to 4-D
# and non-contiguous weights, n = 0 and n = m, a Linear without bias, weights that require grad.

from hypothesis import strategies as st  # noqa: E402

from tests.properties import float_tensors, property_test  # noqa: E402


def fractions():
    """A fraction: both ends, halves (round(0.5 * n) ties to even), and any value in between."""
    return st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.75]), st.floats(0, 1))


def assert_smallest_pruned(magnitudes, mask, count, task):
    """``mask`` prunes exactly ``count`` entries of ``magnitudes`` (float64), none larger than a kept one."""
    pruned = int((~mask).sum())
    assert pruned == count, (f"{task}: must prune exactly round(fraction * n) = {count} entries, "
                             f"pruned {pruned} (ties at the boundary still count exactly: a "
                             f"threshold test such as |w| > kthvalue prunes every tied entry)")
    if 0 < count < mask.numel():
        largest_pruned, smallest_kept = float(magnitudes[~mask].max()), float(magnitudes[mask].min())
        assert largest_pruned <= smallest_kept, (
            f"{task}: pruned a |w| of {largest_pruned:g} but kept one of {smallest_kept:g}: the "
            f"smallest magnitudes must go")


@pytest.mark.task("2.1")
@pytest.mark.points(3)
@property_test(float_tensors(), fractions(), st.booleans())
def test_magnitude_mask_on_ties_and_any_shape(weight, fraction, as_parameter):
    from pruning import magnitude_mask
    before = weight.clone()
    argument = nn.Parameter(weight) if as_parameter else weight
    mask = magnitude_mask(argument, fraction)
    task = f"Exercise 2.1 magnitude_mask(weight of shape {tuple(weight.shape)}, {fraction})"
    assert torch.equal(weight.detach(), before), f"{task}: the weight was modified"
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.shape == weight.shape, \
        f"{task}: a bool mask of the weight's shape"
    assert_smallest_pruned(before.abs().double(), mask, round(fraction * weight.numel()), task)


@pytest.mark.task("2.2")
@pytest.mark.points(2)
@property_test(st.lists(float_tensors(max_dims=3), min_size=0, max_size=4), fractions())
def test_global_masks_on_ties_and_any_list(weights, fraction):
    from pruning import global_magnitude_masks
    before = [w.clone() for w in weights]
    masks = global_magnitude_masks(weights, fraction)
    task = (f"Exercise 2.2 global_magnitude_masks(weights of shapes "
            f"{[tuple(w.shape) for w in weights]}, {fraction})")
    assert all(torch.equal(w, b) for w, b in zip(weights, before)), f"{task}: a weight was modified"
    assert isinstance(masks, list) and len(masks) == len(weights), \
        f"{task}: a list of one mask per weight ({len(weights)}; an empty list gives [])"
    for mask, weight in zip(masks, weights):
        assert mask.dtype == torch.bool and mask.shape == weight.shape, f"{task}: each mask has its weight's shape"
    if weights:
        total = sum(w.numel() for w in weights)
        assert_smallest_pruned(torch.cat([w.abs().flatten() for w in before]).double(),
                               torch.cat([m.flatten() for m in masks]), round(fraction * total),
                               f"{task} (one ranking for all {total} entries)")


@st.composite
def weights_with_tied_rows(draw):
    """(rows, ...) weights, 2-D to 4-D, whose rows often share one L2 norm (permuted signs), or
    alternate between peaked rows (one value p) and spread rows (every value s), with p just
    above or below the spread row's L2 norm: the L1 norm, or a norm of each slice, orders them
    the other way round."""
    shape = (draw(st.integers(1, 8)),) + tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    weight = draw(float_tensors(shape=shape, max_magnitude=10))
    if draw(st.booleans()):
        entries, spread = int(torch.Size(shape[1:]).numel()), draw(st.sampled_from([0.5, 1.0, 2.0]))
        peak = spread * entries ** 0.5 * draw(st.sampled_from([0.9, 1.1]))
        rows = torch.zeros(shape[0], entries)
        for row in range(shape[0]):
            if row % 2:
                rows[row] = spread
            else:
                rows[row, draw(st.integers(0, entries - 1))] = peak
        weight = rows.reshape(shape)
    if draw(st.booleans()) and shape[0] > 1:
        row = weight[0].flatten()
        for i in range(1, shape[0]):
            if draw(st.booleans()):
                order = torch.randperm(row.numel(), generator=torch.Generator().manual_seed(i))
                weight[i] = (row[order] * -1 if i % 2 else row[order]).reshape(shape[1:])
    return weight


@pytest.mark.task("2.3")
@pytest.mark.points(2)
@property_test(weights_with_tied_rows(), fractions())
def test_row_norm_mask_on_tied_norms_and_any_shape(weight, fraction):
    from pruning import row_norm_mask
    before = weight.clone()
    mask = row_norm_mask(weight, fraction)
    task = f"Exercise 2.3 row_norm_mask(weight of shape {tuple(weight.shape)}, {fraction})"
    assert torch.equal(weight, before), f"{task}: the weight was modified"
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.shape == weight.shape, \
        f"{task}: a bool mask of the weight's shape"
    rows = mask.reshape(weight.shape[0], -1)
    assert bool((rows.all(dim=1) | ~rows.any(dim=1)).all()), f"{task}: each row is kept or pruned whole"
    norms = before.double().reshape(weight.shape[0], -1).norm(dim=1)
    kept = rows[:, 0]
    count = round(fraction * weight.shape[0])
    assert int((~kept).sum()) == count, (f"{task}: exactly round(fraction * rows) = {count} rows pruned, "
                                         f"got {int((~kept).sum())} (rows whose norms tie count exactly)")
    if 0 < count < weight.shape[0]:
        assert float(norms[~kept].max()) <= float(norms[kept].min()) * (1 + 1e-6), \
            f"{task}: a pruned row has a larger L2 norm than a kept one"


@st.composite
def nm_cases(draw):
    m = draw(st.sampled_from([1, 2, 4, 8]))
    n = draw(st.integers(0, m))
    shape = (draw(st.integers(1, 5)), m * draw(st.integers(1, 4)))
    return draw(float_tensors(shape=shape, max_magnitude=10)), n, m


@pytest.mark.task("2.4")
@pytest.mark.points(3)
@property_test(nm_cases())
def test_nm_mask_on_ties_and_both_ends(case):
    from pruning import nm_sparsity_mask
    weight, n, m = case
    before = weight.clone()
    mask = nm_sparsity_mask(weight, n=n, m=m)
    task = f"Exercise 2.4 nm_sparsity_mask(weight of shape {tuple(weight.shape)}, n={n}, m={m})"
    assert torch.equal(weight, before), f"{task}: the weight was modified"
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.shape == weight.shape, \
        f"{task}: a bool mask of the weight's shape"
    groups = mask.reshape(weight.shape[0], -1, m)
    kept = groups.sum(dim=-1)
    assert bool((kept == n).all()), (
        f"{task}: exactly {n} kept in every group of {m}; some group keeps {int(kept.max())} or "
        f"{int(kept.min())} (with tied magnitudes, a test such as |w| >= n-th largest keeps too many)")
    magnitudes = before.abs().reshape_as(groups)
    if 0 < n < m:
        smallest_kept = magnitudes.masked_fill(~groups, float("inf")).amin(dim=-1)
        largest_dropped = magnitudes.masked_fill(groups, -1.0).amax(dim=-1)
        assert bool((smallest_kept >= largest_dropped).all()), f"{task}: a dropped |w| is larger than a kept one"


@st.composite
def shrink_cases(draw):
    in_features, out_features = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dim = draw(st.sampled_from([0, 1]))
    size = out_features if dim == 0 else in_features
    keep = sorted(draw(st.sets(st.integers(0, size - 1), min_size=1)))
    return (in_features, out_features, draw(st.booleans()), dim, keep,
            draw(st.sampled_from([torch.float32, torch.float64])),
            draw(st.sampled_from([False, True, "weight", "bias"])),  # frozen: all, none, or one of the two
            draw(st.booleans()))


@pytest.mark.task("2.5")
@pytest.mark.points(2)
@property_test(shrink_cases())
def test_shrink_linear_with_or_without_bias_any_dtype(case):
    from pruning import shrink_linear
    in_features, out_features, bias, dim, keep, dtype, frozen, as_tensor = case
    linear = nn.Linear(in_features, out_features, bias=bias).to(dtype)
    if frozen is True:
        linear.requires_grad_(False)
    elif frozen and getattr(linear, frozen) is not None:  # only the weight, or only the bias (BitFit)
        getattr(linear, frozen).requires_grad_(False)
    grad_before = {name: parameter.requires_grad for name, parameter in linear.named_parameters()}
    weight, old_bias = linear.weight.detach().clone(), None if linear.bias is None else linear.bias.detach().clone()
    old_parameters = [linear.weight, linear.bias]
    returned = shrink_linear(linear, torch.tensor(keep) if as_tensor else keep, dim=dim)
    task = (f"Exercise 2.5 shrink_linear(nn.Linear({in_features}, {out_features}, bias={bias}) in "
            f"{dtype}{'' if not frozen else ', frozen' if frozen is True else f', {frozen} frozen'}, keep={keep}, "
            f"dim={dim})")
    assert returned is linear, f"{task}: change the layer in place and return it"
    index = torch.tensor(keep)
    assert torch.equal(linear.weight.detach(), weight.index_select(dim, index)), \
        f"{task}: the weight keeps exactly the {'rows' if dim == 0 else 'columns'} {keep}"
    assert isinstance(linear.weight, nn.Parameter) and linear.weight is not old_parameters[0], \
        f"{task}: the weight is a new nn.Parameter"
    if bias:
        expected_bias = old_bias.index_select(0, index) if dim == 0 else old_bias
        assert isinstance(linear.bias, nn.Parameter) and torch.equal(linear.bias.detach(), expected_bias), \
            f"{task}: the bias {'keeps the same rows' if dim == 0 else 'stays whole'}"
    else:
        assert linear.bias is None, f"{task}: a Linear without bias stays without bias"
    assert linear.weight.dtype == dtype, f"{task}: the dtype stays {dtype}"
    grad_after = {name: parameter.requires_grad for name, parameter in linear.named_parameters()}
    assert grad_after == grad_before, \
        f"{task}: each parameter keeps its own requires_grad {grad_before}, got {grad_after}"
    assert (linear.out_features, linear.in_features) == tuple(linear.weight.shape), \
        f"{task}: out_features and in_features give the new weight's shape"
    x = torch.randn(3, linear.in_features, dtype=dtype)
    assert linear(x).shape == (3, linear.out_features), f"{task}: the layer still runs"


def heads_zeroed(model, layer_index, heads, head_size):
    """A deep copy of ``model`` whose layer ``layer_index`` ignores ``heads`` (their columns of
    ``attention.output.dense`` zeroed): what removing those heads must compute."""
    reference = copy.deepcopy(model)
    dense = encoder_layers(reference)[layer_index].attention.output.dense
    with torch.no_grad():
        for h in heads:
            dense.weight[:, h * head_size:(h + 1) * head_size] = 0
    return reference


@functools.lru_cache(maxsize=1)
def bert_of_4_small_heads(seed):
    """A seeded small BERT with 4 heads of 8 per layer (copy it before changing it)."""
    return seeded_small_bert(seed=seed, vocab_size=100, num_attention_heads=4, hidden_size=32,
                             intermediate_size=37)


@pytest.mark.task("2.6")
@pytest.mark.points(2)
@property_test(st.sets(st.integers(0, 3), min_size=1, max_size=3), st.integers(0, 1),
               st.sampled_from(["list", "tensor", "set"]), max_examples=10)
def test_remove_attention_heads_any_heads(heads, layer_index, kind):
    from pruning import remove_attention_heads
    model = copy.deepcopy(bert_of_4_small_heads(run_seed()))
    head_size = 8
    reference = heads_zeroed(model, layer_index, heads, head_size)
    inputs = bert_inputs(vocab_size=100)
    argument = {"list": sorted(heads), "tensor": torch.tensor(sorted(heads)), "set": set(heads)}[kind]
    attention = encoder_layers(model)[layer_index].attention
    returned = remove_attention_heads(attention, argument)
    task = f"Exercise 2.6 remove_attention_heads(layer {layer_index}'s attention of 4 heads of 8, heads={sorted(heads)})"
    kept = 4 - len(heads)
    assert returned is attention, f"{task}: change the block in place and return it"
    shapes = [tuple(attention.self.query.weight.shape), tuple(attention.output.dense.weight.shape)]
    assert shapes == [(kept * head_size, 32), (32, kept * head_size)], (
        f"{task}: query/key/value keep {kept} x 8 = {kept * head_size} rows and output.dense as many "
        f"columns; got query {shapes[0]}, output.dense {shapes[1]} (head h owns rows "
        f"h*head_size up to, not including, (h+1)*head_size)")
    assert (attention.self.num_attention_heads, attention.self.all_head_size) == (kept, kept * head_size), \
        f"{task}: num_attention_heads and all_head_size must say {kept} and {kept * head_size}"
    torch.testing.assert_close(bert_output(model, inputs), bert_output(reference, inputs), atol=1e-5, rtol=1e-5,
                               msg=f"{task}: the BERT must compute what it computed with those heads' "
                                   "output columns zeroed")


@pytest.mark.task("2.6")
@pytest.mark.points(1)
@pytest.mark.parametrize("frozen", [False, True])
def test_remove_attention_heads_leaves_consistent_layers(frozen):
    """The four Linears say their new sizes (out_features, in_features) and keep each parameter's
    requires_grad: a frozen model stays frozen (what shrink_linear promises, 2.5)."""
    from pruning import remove_attention_heads
    model = copy.deepcopy(bert_of_4_small_heads(run_seed()))
    if frozen:
        model.requires_grad_(False)
    layer_index = int(torch.randint(0, 2, (1,)))
    heads = sorted(torch.randperm(4)[:int(torch.randint(1, 4, (1,)))].tolist())
    attention = encoder_layers(model)[layer_index].attention
    remove_attention_heads(attention, heads)
    task = (f"Exercise 2.6 remove_attention_heads(layer {layer_index}, heads={heads})"
            f"{' of a frozen model' if frozen else ''}")
    linears = {"query": attention.self.query, "key": attention.self.key, "value": attention.self.value,
               "output.dense": attention.output.dense}
    kept = 8 * (4 - len(heads))
    assert tuple(attention.self.query.weight.shape) == (kept, 32) == tuple(attention.output.dense.weight.shape[::-1]), \
        f"{task}: query/key/value keep {kept} rows, output.dense {kept} columns"
    for name, linear in linears.items():
        assert (linear.out_features, linear.in_features) == tuple(linear.weight.shape), (
            f"{task}: {name}.out_features, in_features = {(linear.out_features, linear.in_features)} do not "
            f"match its weight {tuple(linear.weight.shape)} (shrink_linear updates them)")
        for parameter_name, parameter in linear.named_parameters():
            assert parameter.requires_grad == (not frozen), (
                f"{task}: {name}.{parameter_name}.requires_grad must stay {not frozen}")
