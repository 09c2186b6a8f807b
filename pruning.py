"""Exercise 2 "Thanos was Right": magnitude pruning, unstructured and structured.

Pruning removes the weights (or whole neurons and attention heads) that matter least, on the bet
that the network hardly notices. This module has three families, from finest to coarsest:

* **Unstructured** (Exercises 2.1, 2.2): zero individual weights with the smallest ``|w|``, either
  the same fraction in every layer ("local") or one threshold for all layers together ("global").
  The tensors stay dense: the zeros cost as many bytes and as many FLOPs as before.
* **Semi-structured N:M** (Exercise 2.4): in every group of ``m`` consecutive weights along the input
  dimension keep the ``n`` largest. NVIDIA's sparse tensor cores can skip the zeros of the 2:4
  pattern (up to 2x the math throughput; end to end much less); on a CPU it is only a mask.
* **Structured** (Exercises 2.3, 2.5, 2.6): remove whole output neurons or attention heads. Zeroing
  them (2.3) changes nothing about speed; cutting them out of the weight matrices (2.5, 2.6) makes a
  BERT really smaller and faster.

After pruning, a short fine-tune of the remaining weights wins back most of the lost quality
(Exercise 2.7, ``masked_finetune_step``), as long as every pruned weight stays exactly zero.

The given part at the end of this file holds ``number_to_prune`` and ``complement`` (helpers your
functions use) and ``apply_weight_pruning`` (your masks on every matching layer of a model). Given
code that applies your masks and cuts to whole models lives in ``given/``:
``given/pruning_tools.py`` (``prune_output_neurons``, ``apply_nm_pruning``, ``to_semi_structured``,
``sparsity``, ``pruning_masks``), ``given/bert_surgery.py`` (``shrink_bert``, ``load_shrunk_bert``) and
``given/sizes.py`` (``size_report``: what pruning really saves).

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
import torch
from torch import nn

from given.checks import check_finetune_arguments, check_fraction, check_head_positions, check_kept_indices
from given.torch_utils import apply_mask, matching_modules


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
        weight.numel())`` positions: those of the smallest ``|w|``. Where several entries tie at
        the boundary, any of them may go, but the count stays exact: no pruned ``|w|`` is larger
        than a kept one. ``weight`` is not modified (it may be a Parameter that requires grad).
    """
    # Hint: How many entries go is number_to_prune's answer; which ones is a question of ranking
    # |w|. Ties at the boundary are the trap: what picks exactly k entries even when several are
    # equal?
    # Hint 2, when you want it: python tools/hints.py 2.1
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
        weights: list of tensors (any shapes, one dtype); an empty list gives an empty list.
        fraction: float in [0, 1].

    Returns:
        list of bool masks, one per weight, each of that weight's shape. Ties are broken as
        ``magnitude_mask`` breaks them: exactly ``number_to_prune(fraction, total entries)`` entries
        are pruned in all, and no pruned ``|w|`` is larger than a kept one.
    """
    # Hint: What is global ranking, if not the ranking of 2.1 on all weights at once? Then each
    # layer needs its own piece of the result back, in its own shape.
    # Hint 2, when you want it: python tools/hints.py 2.2
    # BEGIN SOLUTION Exercise 2.2: rank all layers' weights together and split the mask back
    if not weights:
        return []
    flat = torch.cat([weight.detach().flatten() for weight in weights])
    flat_mask = magnitude_mask(flat, fraction)
    pieces = torch.split(flat_mask, [weight.numel() for weight in weights])
    return [piece.view_as(weight) for piece, weight in zip(pieces, weights)]
    # END SOLUTION


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
        exactly ``number_to_prune(fraction, out_features)`` rows ``False``: those of smallest L2
        norm (rows whose norms tie at the boundary: any of them may go, the count stays exact).
    """
    # Hint: A row's importance is one number, whatever the weight's dimensions. Deciding which rows
    # to keep, rather than which to drop, keeps the count exact when norms tie.
    # Hint 2, when you want it: python tools/hints.py 2.3
    # BEGIN SOLUTION Exercise 2.3: mask the rows of smallest L2 norm
    rows = weight.shape[0]
    row_norms = torch.linalg.vector_norm(weight.detach().reshape(rows, -1), ord=2, dim=1)
    keep = torch.topk(row_norms, k=rows - number_to_prune(fraction, rows), largest=True).indices
    mask = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    mask[keep] = True
    return mask
    # END SOLUTION


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
        n, m: keep ``n`` of every ``m`` (``0 <= n <= m``; ``n = 0`` keeps nothing, ``n = m`` all).

    Returns:
        bool tensor of ``weight``'s shape with exactly ``n`` ``True`` in every group, at its ``n``
        largest ``|w|`` (where magnitudes tie, any of the tied may be kept: the count stays ``n``).
    """
    if not (isinstance(n, int) and isinstance(m, int) and m >= 1 and 0 <= n <= m):
        raise ValueError(f"need integers 0 <= n <= m and m >= 1, got n={n!r}, m={m!r}")
    if weight.dim() != 2 or weight.shape[1] % m != 0:
        raise ValueError(f"N:M sparsity needs a 2-D weight whose input dimension is a multiple of "
                         f"m={m}, got shape {tuple(weight.shape)}")
    # Hint: Each group of m consecutive input weights decides on its own. Can you arrange |weight|
    # so one dimension holds exactly one group, and choose along it for every group at once?
    # Hint 2, when you want it: python tools/hints.py 2.4
    # BEGIN SOLUTION Exercise 2.4: keep the n largest |w| of every m consecutive input weights
    rows, columns = weight.shape
    groups = weight.detach().abs().reshape(rows, columns // m, m)
    largest = torch.topk(groups, k=n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, largest, True)
    return mask.reshape(rows, columns)
    # END SOLUTION


# ---------------------------------------------------------------------------------------------
# Physically shrinking a BERT: fewer FFN neurons and attention heads (Exercises 2.5 and 2.6)
# ---------------------------------------------------------------------------------------------

def shrink_linear(linear, keep, dim):
    """Keep only some output rows (``dim=0``) or input columns (``dim=1``) of ``linear``, in place.

    Args:
        linear: an ``nn.Linear`` with weight ``(out_features, in_features)`` and optional bias
            ``(out_features,)``.
        keep: 1-D int64 tensor (or list of ints) of the indices to keep along ``dim``, strictly
            increasing, in range, not empty (a bool mask, floats, duplicates: a clear error).
        dim: 0 removes output neurons (weight rows and their bias entries); 1 removes input
            features (weight columns; the bias stays whole).

    Returns:
        ``linear``, with new ``nn.Parameter`` weight (and bias, if it has one: a Linear without
        bias stays without) and updated ``out_features``/``in_features``; the kept values, the
        dtype, the device and each parameter's ``requires_grad`` are unchanged.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    if dim not in (0, 1) or isinstance(dim, bool):
        raise ValueError(f"dim must be 0 (output rows) or 1 (input columns), got {dim!r}")
    keep = check_kept_indices(keep, linear.weight.shape[dim]).to(linear.weight.device)
    # Hint: Which tensors of the layer change size along dim 0, which along dim 1, and what else in
    # the layer describes its size? What must a new parameter keep from the old one?
    # Hint 2, when you want it: python tools/hints.py 2.5
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
        (``attention_head_size`` is unchanged), and its four Linears as ``shrink_linear`` leaves
        them (``out_features``/``in_features`` updated, each ``requires_grad`` unchanged).
    """
    self_attention = attention.self
    head_count, head_size = self_attention.num_attention_heads, self_attention.attention_head_size
    heads = check_head_positions(heads, head_count)
    # Hint: Which rows of query/key/value belong to head h, and which columns of output.dense read
    # them? Removing a head is removing those indices from four layers, with a tool you wrote in
    # 2.5, and the block must then say how many heads it has.
    # Hint 2, when you want it: python tools/hints.py 2.6
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


# ---------------------------------------------------------------------------------------------
# Fine-tuning a pruned model with its mask kept (Exercise 2.7)
# ---------------------------------------------------------------------------------------------

def masked_finetune_step(model, masks, inputs, labels, optimizer):
    """One masked-LM training step of a pruned model in which every pruned weight stays exactly zero.

    Pruning costs quality; a short fine-tune of the weights that remain wins most of it back (Han et
    al. 2015, "Learning both Weights and Connections"), provided the pruned weights stay pruned.

    1. ``model.train()``, then discard old gradients (``optimizer.zero_grad()``).
    2. Forward and backward: ``loss = model(**inputs, labels=labels).loss`` (Hugging Face's
       masked-LM cross-entropy over the positions whose label is not -100), ``loss.backward()``.
    3. ``optimizer.step()``.
    4. Multiply every masked parameter by its mask again, in place and without autograd.

    The trap is step 4. Zeroing the gradients of the pruned weights is not enough: AdamW moves a
    weight by its running moment estimates, so a weight that had gradients before it was pruned (a
    model trained before pruning, or pruned again between rounds) keeps moving after its gradient
    is zero. Only masking the weights *after* the step keeps them at zero, whatever the optimizer.

    Args:
        model: a ``...ForMaskedLM`` (it computes the loss when given ``labels``); trained in place
            and left in training mode.
        masks: ``{parameter name: bool tensor of that parameter's shape}``, ``True`` = kept, as
            ``given.pruning_tools.pruning_masks(model)`` returns for the zeros of a pruned model.
            Names are those of ``model.named_parameters()``; parameters not named are not masked.
        inputs: dict of model inputs (``input_ids``, ``attention_mask``), int64 (batch, length).
        labels: int64 (batch, length): the token to predict, -100 where nothing is scored.
        optimizer: any ``torch.optim`` optimizer over the model's parameters, e.g.
            ``torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)``.

    Returns:
        The loss of this step (before the update), a Python float (``loss.item()``).
    """
    check_finetune_arguments(model, masks, inputs, labels)
    # Hint: The trap is step 4 of the docstring: why is it not enough that a pruned weight gets no
    # gradient, and how do you find each masked parameter by its name?
    # Hint 2, when you want it: python tools/hints.py 2.7
    # BEGIN SOLUTION Exercise 2.7: one fine-tuning step that keeps every pruned weight at zero (re-mask after the step)
    model.train()
    optimizer.zero_grad()
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    optimizer.step()
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name].mul_(mask)
    return loss.item()
    # END SOLUTION


# =============================================================================================
# Given, not graded: two helpers your functions use (read their docstrings), and the lab
# statement's entry point, apply_weight_pruning, which applies your masks to every matching layer.
# =============================================================================================

def number_to_prune(fraction, count):
    """How many of ``count`` units a ``fraction`` prunes: ``round(fraction * count)``, as torch does."""
    return round(fraction * count)


def complement(removed, size):
    """The indices in ``range(size)`` not in ``removed``, increasing, as an int64 tensor."""
    keep = torch.ones(size, dtype=torch.bool)
    keep[torch.as_tensor(removed, dtype=torch.long)] = False
    return keep.nonzero().flatten()


def apply_weight_pruning(model, layer_type, pruning_percentage, scope="local"):
    """Unstructured magnitude pruning of every ``layer_type`` module's weight, in place.

    Args:
        model: any ``nn.Module``; changed in place and returned.
        layer_type: which modules to prune, e.g. ``nn.Linear`` (their ``.weight`` only; biases
            are left untouched).
        pruning_percentage: the fraction in [0, 1] of weights to zero: pass 0.2, not 20 (the
            lab statement's name; it is ``fraction`` everywhere after this function). 0 changes
            nothing, 1 zeros every weight.
        scope: ``"local"`` prunes that fraction of each layer, as
            ``prune.l1_unstructured`` per module; ``"global"`` ranks all matching layers'
            weights together, as ``prune.global_unstructured``.

    Returns:
        ``model``, whose pruned weights are exact zeros in plain dense tensors. The model is
        no smaller and no faster: see ``given.sizes.size_report``.

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
