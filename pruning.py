"""Exercise 2 "Thanos was Right": magnitude pruning, unstructured and structured.

Pruning removes the weights (or whole neurons and attention heads) that matter least, on the bet
that the network hardly notices. This module has three families, from finest to coarsest:

* **Unstructured** (Exercises 2.1, 2.2): zero individual weights with the smallest ``|w|``, either
  the same fraction in every layer ("local") or one threshold for all layers together ("global").
  The tensors stay dense: the zeros cost as many bytes and as many FLOPs as before.
* **Semi-structured N:M** (Exercise 2.4): in every group of ``m`` consecutive weights along the input
  dimension keep the ``n`` largest. NVIDIA's sparse tensor cores run the 2:4 pattern about twice as
  fast; on a CPU it is only a mask.
* **Structured** (Exercises 2.3, 2.5, 2.6): remove whole output neurons or attention heads. Zeroing
  them (2.3) changes nothing about speed; cutting them out of the weight matrices (2.5, 2.6) makes a
  BERT really smaller and faster.

Conventions used throughout:

* A ``mask`` is a ``torch.bool`` tensor of the weight's shape: ``True`` keeps the weight, ``False``
  prunes it. Pruning multiplies the weight by its mask in place.
* A ``fraction`` is a float in [0, 1]; the number of weights (or rows) pruned out of ``count`` is
  ``round(fraction * count)``, Python's round (half to even), exactly as ``torch.nn.utils.prune``
  computes it. So 0.5 of 5 rows prunes 2, and 0.5 of 7 rows prunes 4.
* ``nn.Linear`` stores its weight as ``(out_features, in_features)``: row ``i`` holds the weights
  into output neuron ``i``; column ``j`` the weights out of input feature ``j``.
* Biases are never pruned.
* After pruning, weights are plain ``nn.Parameter`` tensors (no ``weight_orig``/``weight_mask``
  re-parametrisation, no hooks), so a pruned model saves, loads and deep-copies like any other.
"""
import json
import numbers
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "magnitude_mask", "global_magnitude_masks", "apply_weight_pruning",
    "row_norm_mask", "prune_output_neurons",
    "nm_sparsity_mask", "apply_nm_pruning", "to_semi_structured",
    "shrink_linear", "remove_attention_heads",
    "prune_bert_ffn_neurons", "prune_bert_heads", "shrink_bert", "load_shrunk_bert",
    "sparsity", "size_report",
]


# ---------------------------------------------------------------------------------------------
# Given: checking arguments and finding the layers to prune
# ---------------------------------------------------------------------------------------------

def check_fraction(value, name="pruning_percentage"):
    """Return ``value`` as a float, or raise if it is not a fraction in [0, 1].

    Raises:
        TypeError: ``value`` is not a real number (``bool`` included).
        ValueError: ``value`` is outside [0, 1] or NaN. A value in (1, 100] is most likely a
            percentage, so the message suggests the fraction (20 -> "did you mean 0.2?").
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a fraction in [0, 1] (a float), got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also False for NaN
        hint = f"; did you mean {value / 100:g}?" if 1.0 < value <= 100.0 else ""
        raise ValueError(f"{name} must be a fraction in [0, 1]{hint} (got {value:g})")
    return value


def matching_modules(model, layer_type):
    """All ``(name, module)`` pairs of ``model`` whose module is an instance of ``layer_type``.

    Args:
        model: any ``nn.Module``.
        layer_type: a module class such as ``nn.Linear``, or a tuple of classes.

    Raises:
        TypeError: ``layer_type`` is not a class (or tuple of classes).
        ValueError: no module matches; the message lists the module types the model does have,
            because silently pruning nothing is the worst possible outcome.
    """
    classes = layer_type if isinstance(layer_type, tuple) else (layer_type,)
    if not classes or not all(isinstance(c, type) for c in classes):
        raise TypeError(f"layer_type must be a module class such as nn.Linear, got {layer_type!r}")
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, layer_type)]
    if not found:
        present = sorted({type(module).__name__ for module in model.modules()})
        wanted = ", ".join(c.__name__ for c in classes)
        raise ValueError(f"no module of type {wanted} in the model, so nothing would be pruned; "
                         f"module types present: {', '.join(present)}")
    return found


def apply_mask(module, mask):
    """Multiply ``module.weight`` by the bool ``mask`` in place (pruned weights become exact zeros)."""
    if mask.shape != module.weight.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(module.weight.shape)}, "
                         f"got {mask.dtype} of shape {tuple(mask.shape)}")
    with torch.no_grad():
        module.weight.mul_(mask)


def number_to_prune(fraction, count):
    """How many of ``count`` units a ``fraction`` prunes: ``round(fraction * count)``, as torch does."""
    return round(fraction * count)


# ---------------------------------------------------------------------------------------------
# Unstructured magnitude pruning (Exercises 2.1 and 2.2)
# ---------------------------------------------------------------------------------------------

def magnitude_mask(weight, fraction):
    """Mask that prunes the ``fraction`` of ``weight`` entries with the smallest absolute value.

    This is ``torch.nn.utils.prune.l1_unstructured``'s rule ("L1" because each entry's L1 norm is
    its ``|w|``), so on weights without ties both give the same mask.

    Args:
        weight: tensor of any shape, e.g. a Linear weight ``(out_features, in_features)``.
        fraction: float in [0, 1] (already checked by the caller).

    Returns:
        bool tensor of ``weight``'s shape, ``False`` at exactly ``number_to_prune(fraction,
        weight.numel())`` positions: those of the smallest ``|w|``.
    """
    # Hint: k = number_to_prune(fraction, weight.numel()). Flatten |weight| (detach it first), find
    # the indices of the k smallest with torch.topk(..., k, largest=False), and set those
    # positions of an all-True mask to False (index a flat view of the mask: mask.view(-1)).
    # BEGIN SOLUTION Exercise 2.1: mask the smallest-|w| fraction of one weight tensor
    mask = torch.ones(weight.shape, dtype=torch.bool, device=weight.device)
    count = number_to_prune(fraction, weight.numel())
    smallest = torch.topk(weight.detach().abs().flatten(), k=count, largest=False).indices
    mask.view(-1)[smallest] = False
    return mask
    # END SOLUTION


def global_magnitude_masks(weights, fraction):
    """Masks that prune the ``fraction`` of *all* entries of ``weights`` with the smallest ``|w|``.

    One threshold for the whole list, as ``torch.nn.utils.prune.global_unstructured`` with
    ``L1Unstructured``: a layer of small weights loses more than ``fraction`` of them, a layer of
    large weights less, and the total pruned is ``number_to_prune(fraction, total entries)``.

    Args:
        weights: list of tensors (any shapes, one dtype).
        fraction: float in [0, 1].

    Returns:
        list of bool masks, one per weight, each of that weight's shape.
    """
    # Hint: global ranking is local ranking on all weights concatenated into one vector
    # (torch.cat of the flattened weights); then split the mask back (torch.split, view_as).
    # BEGIN SOLUTION Exercise 2.2: rank all layers' weights together and split the mask back
    flat = torch.cat([weight.detach().flatten() for weight in weights])
    flat_mask = magnitude_mask(flat, fraction)
    pieces = torch.split(flat_mask, [weight.numel() for weight in weights])
    return [piece.view_as(weight) for piece, weight in zip(pieces, weights)]
    # END SOLUTION


def apply_weight_pruning(model, layer_type, pruning_percentage, scope="local"):
    """Unstructured magnitude pruning of every ``layer_type`` module's weight, in place.

    Args:
        model: any ``nn.Module``; changed in place and returned.
        layer_type: which modules to prune, e.g. ``nn.Linear`` (their ``.weight`` only; biases
            are left untouched).
        pruning_percentage: the fraction in [0, 1] of weights to zero (the name is historical:
            pass 0.2, not 20). 0 changes nothing, 1 zeros every weight.
        scope: ``"local"`` prunes that fraction of each layer, as
            ``prune.l1_unstructured`` per module; ``"global"`` ranks all matching layers'
            weights together, as ``prune.global_unstructured``.

    Returns:
        ``model``, whose pruned weights are exact zeros in plain dense tensors. The model is
        no smaller and no faster: see ``size_report``.

    Note: in a ``BertForMaskedLM`` the MLM decoder is an ``nn.Linear`` whose weight *is* the
    word-embedding matrix (tied), so pruning every ``nn.Linear`` prunes the embeddings too; pass
    ``model.bert.encoder`` to prune the encoder's layers only.

    Raises:
        ValueError: ``pruning_percentage`` outside [0, 1], ``scope`` unknown, or no module of
            ``layer_type`` in ``model``.
    """
    fraction = check_fraction(pruning_percentage, "pruning_percentage")
    if scope not in ("local", "global"):
        raise ValueError(f"scope must be 'local' or 'global', got {scope!r}")
    modules = [module for _, module in matching_modules(model, layer_type)]
    if scope == "local":
        masks = [magnitude_mask(module.weight, fraction) for module in modules]
    else:
        masks = global_magnitude_masks([module.weight for module in modules], fraction)
    for module, mask in zip(modules, masks):
        apply_mask(module, mask)
    return model


# ---------------------------------------------------------------------------------------------
# Structured pruning by zeroing whole output neurons (Exercise 2.3)
# ---------------------------------------------------------------------------------------------

def row_norm_mask(weight, fraction):
    """Mask that prunes the ``fraction`` of rows (output neurons) with the smallest L2 norm.

    The rule of ``torch.nn.utils.prune.ln_structured(module, "weight", amount, n=2, dim=0)``.

    Args:
        weight: tensor ``(out_features, ...)``, at least 2-D; row ``i`` is everything after index i.
        fraction: float in [0, 1].

    Returns:
        bool tensor of ``weight``'s shape whose rows are all ``True`` or all ``False``, with
        ``number_to_prune(fraction, out_features)`` rows ``False``: those of smallest L2 norm.
    """
    # Hint: k = number_to_prune(fraction, rows). The L2 norm of each row is
    # torch.linalg.vector_norm of the weight reshaped to (rows, -1), along dim 1. Like torch,
    # pick the (rows - k) largest norms with torch.topk and set those rows of an all-False mask.
    # BEGIN SOLUTION Exercise 2.3: mask the rows of smallest L2 norm
    rows = weight.shape[0]
    row_norms = torch.linalg.vector_norm(weight.detach().reshape(rows, -1), ord=2, dim=1)
    keep = torch.topk(row_norms, k=rows - number_to_prune(fraction, rows), largest=True).indices
    mask = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    mask[keep] = True
    return mask
    # END SOLUTION


def prune_output_neurons(model, layer_type, fraction):
    """Structured pruning by zeroing: in every ``layer_type`` module, zero whole weight rows.

    Works for any model (Linear, Conv: a row is one output neuron or channel). Like
    ``prune.ln_structured(..., n=2, dim=0)`` it leaves the bias, so a zeroed neuron still outputs
    its bias. Zeroed rows still take their bytes and FLOPs; to really remove neurons from a
    BERT, see ``prune_bert_ffn_neurons``.

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
        apply_mask(module, row_norm_mask(module.weight, fraction))
    return model


# ---------------------------------------------------------------------------------------------
# Semi-structured N:M sparsity (Exercise 2.4)
# ---------------------------------------------------------------------------------------------

def nm_sparsity_mask(weight, n=2, m=4):
    """N:M mask: in every group of ``m`` consecutive weights along the input dim keep the ``n`` largest |w|.

    With ``n=2, m=4`` this is NVIDIA's 2:4 pattern (exactly 50% zeros, in a layout sparse tensor
    cores can skip).

    Args:
        weight: tensor ``(out_features, in_features)``; ``in_features`` must be a multiple of ``m``.
            Groups are ``weight[i, m*g : m*(g+1)]``.
        n, m: keep ``n`` of every ``m`` (``0 <= n <= m``).

    Returns:
        bool tensor of ``weight``'s shape with exactly ``n`` ``True`` in every group.
    """
    if not (isinstance(n, int) and isinstance(m, int) and m >= 1 and 0 <= n <= m):
        raise ValueError(f"need integers 0 <= n <= m and m >= 1, got n={n!r}, m={m!r}")
    if weight.dim() != 2 or weight.shape[1] % m != 0:
        raise ValueError(f"N:M sparsity needs a 2-D weight whose input dimension is a multiple of "
                         f"m={m}, got shape {tuple(weight.shape)}")
    # Hint: view |weight| as (out_features, in_features // m, m) so the last dim is one group;
    # torch.topk(..., k=n, dim=-1) picks the n largest of each group; scatter True there.
    # BEGIN SOLUTION Exercise 2.4: keep the n largest |w| of every m consecutive input weights
    rows, columns = weight.shape
    groups = weight.detach().abs().reshape(rows, columns // m, m)
    largest = torch.topk(groups, k=n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, largest, True)
    return mask.reshape(rows, columns)
    # END SOLUTION


def apply_nm_pruning(model, layer_type, n=2, m=4):
    """Apply the N:M mask (``nm_sparsity_mask``) to every ``layer_type`` module's weight, in place.

    On a CPU the result is a dense tensor with an N:M pattern of zeros (no speed-up). On an
    Ampere-or-newer GPU, ``to_semi_structured`` can then store it in the compressed 2:4 format.

    Returns:
        ``model``.
    """
    for _, module in matching_modules(model, layer_type):
        apply_mask(module, nm_sparsity_mask(module.weight, n, m))
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


# ---------------------------------------------------------------------------------------------
# Physically shrinking a BERT: fewer FFN neurons and attention heads (Exercises 2.5 and 2.6)
# ---------------------------------------------------------------------------------------------

def bert_layers(model):
    """The ``BertLayer`` list of a ``BertModel`` or of any ``BertFor...`` model (via ``model.bert``)."""
    base = getattr(model, getattr(model, "base_model_prefix", "bert"), model)
    try:
        return base.encoder.layer
    except AttributeError:
        raise TypeError(f"expected a Hugging Face BertModel or BertFor... model, got "
                        f"{type(model).__name__}") from None


def lowest_indices(scores, count):
    """Indices of the ``count`` smallest ``scores`` in increasing index order (ties: lower index)."""
    return torch.argsort(scores, stable=True)[:count].sort().values


def complement(removed, size):
    """The indices in ``range(size)`` not in ``removed``, increasing, as an int64 tensor."""
    keep = torch.ones(size, dtype=torch.bool)
    keep[torch.as_tensor(removed, dtype=torch.long)] = False
    return keep.nonzero().flatten()


def shrink_linear(linear, keep, dim):
    """Keep only some output rows (``dim=0``) or input columns (``dim=1``) of ``linear``, in place.

    Args:
        linear: an ``nn.Linear`` with weight ``(out_features, in_features)`` and optional bias
            ``(out_features,)``.
        keep: 1-D int64 tensor of the indices to keep along ``dim``, in increasing order.
        dim: 0 removes output neurons (weight rows and their bias entries); 1 removes input
            features (weight columns; the bias stays whole).

    Returns:
        ``linear``, with new ``nn.Parameter`` weight (and bias) and updated
        ``out_features``/``in_features``; the kept values are unchanged.
    """
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 (output rows) or 1 (input columns), got {dim!r}")
    keep = torch.as_tensor(keep, dtype=torch.long, device=linear.weight.device)
    # Hint: Tensor.index_select(dim, keep) picks the kept rows or columns; wrap the result in a
    # new nn.Parameter, and fix out_features or in_features to the new size.
    # BEGIN SOLUTION Exercise 2.5: keep the given rows or columns of a Linear layer
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight.index_select(dim, keep).clone(),
                                     requires_grad=linear.weight.requires_grad)
        if dim == 0 and linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.index_select(0, keep).clone(),
                                       requires_grad=linear.bias.requires_grad)
    if dim == 0:
        linear.out_features = len(keep)
    else:
        linear.in_features = len(keep)
    return linear
    # END SOLUTION


def remove_attention_heads(attention, heads):
    """Cut the given heads out of one BERT attention block, in place.

    BERT's self-attention splits ``query``, ``key`` and ``value`` (each ``nn.Linear(hidden,
    heads * head_size)``) into consecutive blocks of ``head_size`` output rows, one block per
    head; ``output.dense`` (``nn.Linear(heads * head_size, hidden)``) reads the concatenated head
    outputs, so head ``h`` owns its columns ``h*head_size : (h+1)*head_size``.

    Args:
        attention: a ``BertAttention`` (``attention.self`` is the ``BertSelfAttention``,
            ``attention.output.dense`` the output projection).
        heads: current positions (0 .. num_attention_heads-1) of the heads to remove.

    Returns:
        ``attention``, with ``self.num_attention_heads`` and ``self.all_head_size`` updated
        (``attention_head_size`` is unchanged).
    """
    self_attention = attention.self
    head_count, head_size = self_attention.num_attention_heads, self_attention.attention_head_size
    heads = sorted(set(int(h) for h in heads))
    if any(not 0 <= h < head_count for h in heads) or len(heads) >= head_count:
        raise ValueError(f"heads must be distinct positions in [0, {head_count}) leaving at least one "
                         f"head, got {heads}")
    # Hint: head h owns rows h*head_size ... (h+1)*head_size - 1; complement() gives the indices
    # not removed. shrink_linear query/key/value along dim 0, output.dense along dim 1, then
    # update the two head counts.
    # BEGIN SOLUTION Exercise 2.6: remove whole heads from q/k/v and the output projection
    removed_rows = [h * head_size + i for h in heads for i in range(head_size)]
    keep = complement(removed_rows, head_count * head_size)
    kept_heads = head_count - len(heads)
    for projection in (self_attention.query, self_attention.key, self_attention.value):
        shrink_linear(projection, keep, dim=0)
    shrink_linear(attention.output.dense, keep, dim=1)
    self_attention.num_attention_heads = kept_heads
    self_attention.all_head_size = kept_heads * head_size
    return attention
    # END SOLUTION


def ffn_neuron_importance(layer):
    """L2 norm of all weights of each feed-forward neuron of one ``BertLayer``, shape ``(intermediate,)``.

    Neuron ``i`` reads row ``i`` of ``intermediate.dense.weight`` and writes column ``i`` of
    ``output.dense.weight``; its score is the L2 norm of both together.
    """
    rows = layer.intermediate.dense.weight.detach()
    columns = layer.output.dense.weight.detach().T
    return torch.linalg.vector_norm(torch.cat([rows, columns], dim=1), dim=1)


def attention_head_importance(attention):
    """L2 norm of all weights of each head of one ``BertAttention``, shape ``(num_attention_heads,)``.

    Head ``h`` owns ``head_size`` rows of the query, key and value weights and the same
    ``head_size`` columns of ``output.dense.weight``; its score is the L2 norm of all of them
    (biases not counted).
    """
    self_attention = attention.self
    heads, head_size = self_attention.num_attention_heads, self_attention.attention_head_size
    blocks = [linear.weight.detach().reshape(heads, head_size, -1)
              for linear in (self_attention.query, self_attention.key, self_attention.value)]
    blocks.append(attention.output.dense.weight.detach().T.reshape(heads, head_size, -1))
    return torch.linalg.vector_norm(torch.cat(blocks, dim=2).reshape(heads, -1), dim=1)


def _check_bert_fraction(fraction):
    fraction = check_fraction(fraction, "fraction")
    if fraction >= 1.0:
        raise ValueError("fraction must be below 1: a BERT layer needs at least one head and neuron")
    return fraction


def prune_bert_ffn_neurons(model, fraction):
    """Remove the ``fraction`` of feed-forward neurons with the smallest weight norm, in every layer.

    Each layer loses the same number, ``number_to_prune(fraction, intermediate_size)`` neurons
    (rows of ``intermediate.dense``, the matching columns of ``output.dense``), ranked per layer by
    ``ffn_neuron_importance``. Because the count is uniform, ``config.intermediate_size`` still
    describes every layer, and ``from_pretrained`` reloads the saved model as it is.

    The pruned model computes exactly what the unpruned model computes with those neurons'
    ``output.dense`` columns set to zero.

    Args:
        model: a ``BertModel`` or ``BertFor...`` model, changed in place.
        fraction: float in [0, 1).

    Returns:
        ``model``, with ``model.config.intermediate_size`` updated.
    """
    fraction = _check_bert_fraction(fraction)
    layers = bert_layers(model)
    sizes = {layer.intermediate.dense.out_features for layer in layers}
    if len(sizes) != 1:
        raise ValueError(f"layers have different feed-forward sizes {sorted(sizes)}; the config can "
                         f"only describe one")
    size = sizes.pop()
    count = number_to_prune(fraction, size)
    if count >= size:
        raise ValueError(f"fraction {fraction:g} would remove all {size} feed-forward neurons of each layer")
    for layer in layers:
        removed = lowest_indices(ffn_neuron_importance(layer), count)
        keep = complement(removed, size)
        shrink_linear(layer.intermediate.dense, keep, dim=0)
        shrink_linear(layer.output.dense, keep, dim=1)
    model.config.intermediate_size = size - count
    return model


def prune_bert_heads(model, fraction):
    """Remove the ``fraction`` of attention heads with the smallest weight norm, in every layer.

    Each layer loses ``number_to_prune(fraction, heads in that layer)`` heads, ranked per layer by
    ``attention_head_importance`` (L2 norm of the head's q/k/v rows and output columns). The
    pruned model computes exactly what the unpruned model computes with those heads' columns of
    ``attention.output.dense`` set to zero.

    Saving and reloading: a BERT config derives the head size as ``hidden_size //
    num_attention_heads``, so it cannot say "12 heads of 64 in layer 0 but 8 in layer 1".
    ``config.num_attention_heads`` therefore keeps the original count, and the removed heads are
    recorded, in original numbering, in ``config.pruned_heads`` (``{layer index: [heads]}``), the
    field transformers 4.x itself uses. Reload with ``load_shrunk_bert(path)``: on transformers
    4.x that is plain ``from_pretrained``; 5.x dropped ``prune_heads``, so it rebuilds the shapes.

    Args:
        model: a ``BertModel`` or ``BertFor...`` model, changed in place.
        fraction: float in [0, 1).

    Returns:
        ``model``, with ``model.config.pruned_heads`` updated.
    """
    fraction = _check_bert_fraction(fraction)
    pruned = {int(layer): set(heads) for layer, heads in (getattr(model.config, "pruned_heads", None) or {}).items()}
    attentions = [layer.attention for layer in bert_layers(model)]
    head_counts = [attention.self.num_attention_heads for attention in attentions]
    emptied = [heads for heads in head_counts if number_to_prune(fraction, heads) >= heads]
    if emptied:
        raise ValueError(f"fraction {fraction:g} would remove every head of a layer with "
                         f"{emptied[0]} heads; at least one must stay")
    for index, attention in enumerate(attentions):
        original_heads = [h for h in range(model.config.num_attention_heads) if h not in pruned.get(index, set())]
        scores = attention_head_importance(attention)
        removed = lowest_indices(scores, number_to_prune(fraction, len(scores))).tolist()
        if not removed:
            continue
        remove_attention_heads(attention, removed)
        removed_original = {original_heads[position] for position in removed}
        pruned[index] = pruned.get(index, set()) | removed_original
        if hasattr(attention, "pruned_heads"):  # transformers 4.x bookkeeping for its prune_heads
            attention.pruned_heads = attention.pruned_heads | removed_original
    model.config.pruned_heads = {layer: sorted(heads) for layer, heads in sorted(pruned.items())}
    return model


def shrink_bert(model, fraction):
    """Structured pruning of a BERT: remove ``fraction`` of the FFN neurons and of the heads per layer.

    Returns:
        ``model``, physically smaller (fewer parameters) and faster. Reload a saved copy with
        ``load_shrunk_bert``.
    """
    prune_bert_ffn_neurons(model, fraction)
    prune_bert_heads(model, fraction)
    return model


def load_shrunk_bert(path, model_class=None):
    """Load a BERT saved after ``shrink_bert``/``prune_bert_heads`` (``save_pretrained(path)``).

    ``config.pruned_heads`` says which heads each layer lost. transformers 4.x applies it inside
    ``from_pretrained``; transformers 5.x ignores it, so here the model is built from the config,
    the recorded heads are cut out (same shapes as when saved), and the saved tensors are loaded
    into it. Only safetensors checkpoints (the default of ``save_pretrained``) are read.

    Args:
        path: folder written by ``save_pretrained``.
        model_class: e.g. ``BertForMaskedLM`` (default) or ``BertModel``.

    Returns:
        the model, in eval mode.
    """
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForMaskedLM

    model_class = model_class or BertForMaskedLM
    path = Path(path)
    config = BertConfig.from_pretrained(path)
    pruned = {int(layer): heads for layer, heads in (getattr(config, "pruned_heads", None) or {}).items()}
    if not pruned or hasattr(model_class, "prune_heads"):
        return model_class.from_pretrained(path).eval()

    model = model_class(config)
    for index, heads in pruned.items():
        remove_attention_heads(bert_layers(model)[index].attention, heads)
    index_file = path / "model.safetensors.index.json"
    if index_file.exists():
        shards = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    state = {}
    for shard in shards:
        state.update(load_file(path / shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    loaded = {tensor.data_ptr() for name, tensor in model.state_dict().items() if name in state}
    untied_missing = [name for name in missing if model.state_dict()[name].data_ptr() not in loaded]
    if unexpected or untied_missing:
        raise ValueError(f"checkpoint at {path} does not fit the model: missing {untied_missing}, "
                         f"unexpected {unexpected}")
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Given: measuring what pruning did
# ---------------------------------------------------------------------------------------------

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


CSR_INDEX_BYTES = 8
"""Bytes per CSR index: torch's ``to_sparse_csr`` stores row pointers and column indices as int64."""


def csr_bytes(tensor):
    """Bytes ``tensor.to_sparse_csr()`` needs for a 2-D tensor: values + column indices + row pointers."""
    rows = tensor.shape[0]
    nonzeros = int(torch.count_nonzero(tensor))
    return nonzeros * (tensor.element_size() + CSR_INDEX_BYTES) + (rows + 1) * CSR_INDEX_BYTES


def size_report(model):
    """Honest sizes of a (pruned) model.

    Zeros in a dense tensor cost as many bytes as any other value: unstructured pruning does
    not shrink ``dense_bytes``. A sparse layout stores only the nonzeros, but also an index for
    each: in CSR with fp32 values and int64 indices a matrix gets smaller only above 2/3
    sparsity. Structured pruning that really removes neurons (``shrink_bert``) shrinks
    ``dense_bytes`` itself.

    Returns:
        dict with
        ``parameters``: number of parameter entries (shared/tied parameters counted once);
        ``nonzero_parameters``: how many of them are not zero;
        ``dense_bytes``: bytes of all parameters and buffers as stored now;
        ``csr_bytes``: bytes if every 2-D parameter (weight matrix, embedding) were stored in
        CSR (``csr_bytes``), everything else as it is.
    """
    parameters = list(model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    dense = sum(p.numel() * p.element_size() for p in parameters)
    csr = sum(csr_bytes(p.detach()) if p.dim() == 2 else p.numel() * p.element_size() for p in parameters)
    return {
        "parameters": sum(p.numel() for p in parameters),
        "nonzero_parameters": sum(int(torch.count_nonzero(p)) for p in parameters),
        "dense_bytes": dense + buffer_bytes,
        "csr_bytes": csr + buffer_bytes,
    }
