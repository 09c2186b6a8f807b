"""Structured pruning of a whole BERT with your Exercise 2.5 and 2.6 cuts, and reloading it (given code).

``shrink_bert`` removes the least important feed-forward neurons and attention heads of every
layer, so the model really has fewer parameters and runs faster; ``load_shrunk_bert`` reloads a
saved shrunk model (a BERT config cannot say "8 heads in this layer, 12 in that one").
"""
import json
from pathlib import Path

import torch

from given import your_code
from given.checks import check_fraction, is_integer


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
    if not (is_integer(count) and 0 <= count <= len(scores)):
        raise ValueError(f"count must be an integer in [0, {len(scores)}], got {count!r}")
    return torch.argsort(scores, stable=True)[:count].sort().values


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
    count = your_code.pruning.number_to_prune(fraction, size)
    if count >= size:
        raise ValueError(f"fraction {fraction:g} would remove all {size} feed-forward neurons of each layer")
    for layer in layers:
        removed = lowest_indices(ffn_neuron_importance(layer), count)
        keep = your_code.pruning.complement(removed, size)
        your_code.pruning.shrink_linear(layer.intermediate.dense, keep, dim=0)
        your_code.pruning.shrink_linear(layer.output.dense, keep, dim=1)
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
    recorded, in original numbering, in ``config.pruned_heads`` (``{layer index: [heads]}``).
    Reload a saved copy with ``load_shrunk_bert(path)``.

    Args:
        model: a ``BertModel`` or ``BertFor...`` model, changed in place.
        fraction: float in [0, 1).

    Returns:
        ``model``, with ``model.config.pruned_heads`` updated.
    """
    fraction = _check_bert_fraction(fraction)
    attentions = [layer.attention for layer in bert_layers(model)]  # a clear TypeError if not a BERT
    pruned = {int(layer): set(heads) for layer, heads in (getattr(model.config, "pruned_heads", None) or {}).items()}
    head_counts = [attention.self.num_attention_heads for attention in attentions]
    emptied = [heads for heads in head_counts if your_code.pruning.number_to_prune(fraction, heads) >= heads]
    if emptied:
        raise ValueError(f"fraction {fraction:g} would remove every head of a layer with "
                         f"{emptied[0]} heads; at least one must stay")
    for index, attention in enumerate(attentions):
        original_heads = [h for h in range(model.config.num_attention_heads) if h not in pruned.get(index, set())]
        scores = attention_head_importance(attention)
        removed = lowest_indices(scores, your_code.pruning.number_to_prune(fraction, len(scores))).tolist()
        if not removed:
            continue
        your_code.pruning.remove_attention_heads(attention, removed)
        removed_original = {original_heads[position] for position in removed}
        pruned[index] = pruned.get(index, set()) | removed_original
        if hasattr(attention, "pruned_heads"):  # the library's own record, where it keeps one
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

    ``config.pruned_heads`` says which heads each layer lost. The model is built from the config,
    the recorded heads are cut out (same shapes as when saved), and the saved tensors are loaded
    into it; a model class that prunes heads itself while loading (``prune_heads``) simply uses
    ``from_pretrained``. Only safetensors checkpoints (the default of ``save_pretrained``) are read.

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
        your_code.pruning.remove_attention_heads(bert_layers(model)[index].attention, heads)
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
