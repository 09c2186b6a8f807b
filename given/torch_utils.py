"""Small PyTorch helpers used across the lab (given code): finding layers, applying masks, devices."""
import torch

IGNORE_INDEX = -100
"""Label of every position that is not scored (PyTorch's and Hugging Face's convention)."""


def matching_modules(model, layer_type):
    """All ``(name, module)`` pairs of ``model`` whose module is an instance of ``layer_type``.

    Args:
        model: any ``nn.Module``.
        layer_type: a module class such as ``nn.Linear``, or a tuple of classes. Every matching
            module must have a ``weight`` tensor (``nn.ReLU`` has none).

    Raises:
        TypeError: ``layer_type`` is not a class (or tuple of classes), or a matching module has
            no weight.
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
    for name, module in found:
        if not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise TypeError(f"{name or 'the model'} ({type(module).__name__}) has no weight tensor "
                            "to prune; choose a layer_type with weights, such as nn.Linear")
    return found


def apply_mask(module, mask):
    """Multiply ``module.weight`` by the bool ``mask`` in place (pruned weights become exact zeros)."""
    if not isinstance(mask, torch.Tensor) or mask.shape != module.weight.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(module.weight.shape)}, got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)} of shape "
                         f"{tuple(getattr(mask, 'shape', ()))}")
    with torch.no_grad():
        module.weight.mul_(mask)


def model_device(model):
    """The device of the model's first parameter (or buffer); CPU for a model without tensors."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def default_device():
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def relative_error(approx, exact):
    """``||approx - exact|| / ||exact||`` (Frobenius norms), computed in float32 whatever the dtypes
    (an fp16 norm overflows above 65504), with ``||exact||`` at least 1e-12 (an exact zero gives
    0 for a zero ``approx``, not NaN)."""
    return float((approx.float() - exact.float()).norm() / exact.float().norm().clamp_min(1e-12))
