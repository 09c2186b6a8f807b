"""How many bytes a model takes: three counts, three names (given code).

- ``stored_bytes``: what the tensors occupy as stored now (parameters, buffers, bitsandbytes
  states), each shared tensor once. Zeros cost as much as any other value.
- ``packed_bytes``: the same, except that layers which know a tighter packed encoding (the lab's
  ``QuantizedLinear``, whose 1-bit and ternary values sit in int8 for simplicity) count that.
- ``csr_bytes``: what the model would take with every 2-D parameter stored in CSR, the sparse
  layout of ``Tensor.to_sparse_csr()``: the honest size of an unstructured-pruned model.
"""
import math

import torch

BITS_PER_VALUE = {"int8": 8, "fp16": 16, "1bit": 1, "1.58bit": 8 / 5}
"""Bits one value costs when packed. 1bit: 8 signs per byte. 1.58bit: log2(3) = 1.585 bits is the
information content of a ternary value; a real encoding packs 5 of them in one byte (3^5 = 243 <=
256), i.e. 1.6 bits each."""

CSR_INDEX_BYTES = 8
"""Bytes per CSR index: torch's ``to_sparse_csr`` stores row pointers and column indices as int64."""


def packed_values_bytes(count, quantization_format):
    """Bytes that ``count`` values take packed in ``quantization_format`` (scales not included)."""
    return math.ceil(count * BITS_PER_VALUE[quantization_format] / 8)


def _bitsandbytes_state_tensors(parameter):
    """Tensors bitsandbytes keeps beside a quantized weight: int8 row scales, 4-bit block state."""
    scb = getattr(parameter, "SCB", None)  # Int8Params: one float32 absmax per output row
    if isinstance(scb, torch.Tensor):
        yield scb
    state = getattr(parameter, "quant_state", None)  # Params4bit: absmax per block, code book
    while state is not None:  # double quantization nests a second state for the absmax values
        for name in ("absmax", "code", "offset"):
            tensor = getattr(state, name, None)
            if isinstance(tensor, torch.Tensor):
                yield tensor
        state = getattr(state, "state2", None)


def _semi_structured_parts(tensor):
    """The compressed values and metadata of a 2:4 semi-structured sparse tensor, else ``None``.

    ``SparseSemiStructuredTensor`` is a wrapper subclass: its ``data_ptr()`` is 0 and its
    ``nbytes`` the dense size, so its real storage is in these inner tensors.
    """
    parts = [getattr(tensor, name, None) for name in ("packed", "meta", "packed_t", "meta_t")]
    parts = [part for part in parts if isinstance(part, torch.Tensor)]
    return parts or None


def _key(tensor):
    """Identifies a tensor's storage: two views of the same bytes have the same key."""
    return tensor.data_ptr(), tensor.nbytes, tensor.dtype


def stored_tensors(model):
    """Every tensor the model stores, each once: parameters, buffers, bitsandbytes states.

    Tied weights (BERT's decoder shares the word embeddings) and aliases are counted once; a 2:4
    semi-structured weight counts its compressed values and metadata.
    """
    seen = set()
    candidates = (*model.parameters(), *model.buffers(),
                  *(t for p in model.parameters() for t in _bitsandbytes_state_tensors(p)))
    for candidate in candidates:
        for tensor in _semi_structured_parts(candidate) or (candidate,):
            if tensor.nbytes and _key(tensor) not in seen:
                seen.add(_key(tensor))
                yield tensor


def stored_bytes(model):
    """Bytes of parameters + buffers as stored (int8 = 1 byte, packed 4-bit = 0.5 byte, plus scales)."""
    return sum(tensor.nbytes for tensor in stored_tensors(model))


def storage_dtypes(model):
    """The stored dtypes, largest share of bytes first, e.g. ``"int8 68% + float32 32%"``."""
    by_dtype = {}
    for tensor in stored_tensors(model):
        name = str(tensor.dtype).removeprefix("torch.")
        by_dtype[name] = by_dtype.get(name, 0) + tensor.nbytes
    total = sum(by_dtype.values())
    shares = [(name, nbytes / total) for name, nbytes in sorted(by_dtype.items(), key=lambda item: -item[1])
              if nbytes / total >= 0.005]  # position-id buffers and the like are left out
    if len(shares) == 1:
        return shares[0][0]
    return " + ".join(f"{name} {share:.0%}" for name, share in shares)


def packed_bytes(model):
    """``stored_bytes``, but each submodule with a ``packed_bytes()`` method counts what that
    returns for its own tensors (``QuantizedLinear``: 1bit at 1 bit a value, not the int8 it keeps)."""
    packers = [m for m in model.modules() if m is not model and callable(getattr(m, "packed_bytes", None))]
    packed_keys = {_key(tensor) for module in packers for tensor in stored_tensors(module)}
    others = sum(tensor.nbytes for tensor in stored_tensors(model) if _key(tensor) not in packed_keys)
    return others + sum(module.packed_bytes() for module in packers)


def csr_tensor_bytes(tensor):
    """Bytes ``tensor.to_sparse_csr()`` needs for a 2-D tensor: values + column indices + row pointers."""
    rows = tensor.shape[0]
    nonzeros = int(torch.count_nonzero(tensor))
    return nonzeros * (tensor.element_size() + CSR_INDEX_BYTES) + (rows + 1) * CSR_INDEX_BYTES


def csr_bytes(model):
    """Bytes of the model with every 2-D parameter (weight matrix, embedding) in CSR, the rest as
    stored. In CSR with fp32 values and int64 indices a matrix gets smaller only above 2/3 sparsity."""
    parameters = list(model.parameters())
    buffers = sum(b.nbytes for b in model.buffers())
    return buffers + sum(csr_tensor_bytes(p.detach()) if p.dim() == 2 else p.nbytes for p in parameters)


def size_report(model):
    """Honest sizes of a (pruned) model.

    Zeros in a dense tensor cost as many bytes as any other value: unstructured pruning does not
    shrink ``dense_bytes``. A sparse layout stores only the nonzeros, but also an index for each
    (``csr_bytes``). Structured pruning that really removes neurons (``shrink_bert``) shrinks
    ``dense_bytes`` itself.

    Returns:
        dict with ``parameters`` (entries, shared/tied parameters once), ``nonzero_parameters``,
        ``dense_bytes`` (``stored_bytes``) and ``csr_bytes``.
    """
    parameters = list(model.parameters())
    return {
        "parameters": sum(p.numel() for p in parameters),
        "nonzero_parameters": sum(int(torch.count_nonzero(p)) for p in parameters),
        "dense_bytes": stored_bytes(model),
        "csr_bytes": csr_bytes(model),
    }
