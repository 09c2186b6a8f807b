"""Your Exercise 2 masks applied to whole models, and how sparse a model is (given code)."""
from torch import nn

from given import your_code
from given.checks import check_fraction
from given.torch_utils import apply_mask, matching_modules


def prune_output_neurons(model, layer_type, fraction):
    """Structured pruning by zeroing: in every ``layer_type`` module, zero whole weight rows.

    Works for any model (Linear, Conv: a row is one output neuron or channel). Like
    ``prune.ln_structured(..., n=2, dim=0)`` it leaves the bias, so a zeroed neuron still outputs
    its bias. Zeroed rows still take their bytes and FLOPs; to really remove neurons from a
    BERT, see ``given.bert_surgery.prune_bert_ffn_neurons``.

    Args:
        model: any ``nn.Module``; changed in place and returned.
        layer_type: e.g. ``nn.Linear``; every matching module needs a weight of 2 or more dims.
        fraction: fraction in [0, 1] of each layer's rows to zero (ranked by L2 norm, per layer).

    Returns:
        ``model``.
    """
    fraction = check_fraction(fraction, "fraction")
    for name, module in matching_modules(model, layer_type):
        if module.weight.dim() < 2:
            raise ValueError(f"{name}: structured pruning needs a weight with rows (2 or more dims), "
                             f"got shape {tuple(module.weight.shape)}")
        apply_mask(module, your_code.pruning.row_norm_mask(module.weight, fraction))
    return model


def apply_nm_pruning(model, layer_type, n=2, m=4):
    """Apply the N:M mask (``nm_sparsity_mask``) to every ``layer_type`` module's weight, in place.

    On a CPU the result is a dense tensor with an N:M pattern of zeros (no speed-up). On an
    Ampere-or-newer GPU, ``to_semi_structured`` can then store it in the compressed 2:4 format.

    Returns:
        ``model``.
    """
    for _, module in matching_modules(model, layer_type):
        apply_mask(module, your_code.pruning.nm_sparsity_mask(module.weight, n, m))
    return model


def to_semi_structured(model, layer_type=nn.Linear):
    """Swap each 2:4-pruned weight for ``torch.sparse.to_sparse_semi_structured`` (CUDA only).

    Needs a CUDA GPU with sparse tensor cores (compute capability 8.0+), fp16/bf16 weights already
    on that GPU, and shapes the kernels accept (multiples of 64 are safe). Not used by the tests.

    Returns:
        ``model``.
    """
    from torch.sparse import to_sparse_semi_structured

    for name, module in matching_modules(model, layer_type):
        if module.weight.device.type != "cuda":
            raise RuntimeError(f"{name}: semi-structured sparse tensors need the weight on a CUDA "
                               f"GPU, it is on {module.weight.device}")
        module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()),
                                     requires_grad=False)
    return model


def sparsity(model, layer_type=None):
    """Fraction of zero entries: in the weights of ``layer_type`` modules, or (``None``) in all parameters.

    Returns:
        float in [0, 1].
    """
    if layer_type is None:
        tensors = list(model.parameters())
    else:
        tensors = [module.weight for _, module in matching_modules(model, layer_type)]
    total = sum(t.numel() for t in tensors)
    if total == 0:
        raise ValueError("the model has no parameters to measure")
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return zeros / total


def pruning_masks(model, layer_type=nn.Linear):
    """The masks that keep a pruned model pruned: ``{parameter name: weight != 0}`` (True = kept).

    One entry per ``layer_type`` module whose weight holds at least one exact zero (a layer with no
    zero has nothing to keep at zero, and is left out). Names are those of
    ``model.named_parameters()``, e.g. ``"bert.encoder.layer.0.attention.self.query.weight"``. A
    weight that another kind of module also holds is left out: BERT's MLM decoder *is* the word
    embedding, whose zero row is the [PAD] embedding, not pruning.
    Take the masks right after pruning and before any training: ``masked_finetune_step`` (your
    Exercise 2.7) keeps exactly these zeros.

    Returns:
        dict of bool tensors, each of its parameter's shape (empty for a model without zeros, e.g.
        one that structured pruning made smaller instead of zeroing).
    """
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    held_elsewhere = {id(module.weight) for module in model.modules()
                      if not isinstance(module, layer_type) and isinstance(getattr(module, "weight", None), nn.Parameter)}
    masks = {}
    for _, module in matching_modules(model, layer_type):
        name = names.get(id(module.weight))
        if name is not None and name not in masks and id(module.weight) not in held_elsewhere \
                and bool((module.weight == 0).any()):
            masks[name] = module.weight.detach() != 0
    return masks
