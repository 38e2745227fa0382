"""Which tensors count as prunable, and the effective (mask-applied) tensors of a model.

Everything here reads `module.weight`, the effective tensor: for a weight masked with
`torch.nn.utils.parametrize` that is `original * mask`, with exact zeros, which is what a
deployed model computes with. `parametrizations.*.original` is never read directly.
"""
from torch import nn
from torch.nn.utils import parametrize

from ..masks import PRUNABLE_TYPES


def prunable_modules(model: nn.Module) -> list:
    """[(name, module)] of every Linear / ConvNd / ConvTransposeNd with a weight, in
    `model.named_modules()` order."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, PRUNABLE_TYPES) and getattr(module, "weight", None) is not None]


def _internal_modules(model: nn.Module) -> set:
    """ids of the modules that implement parametrizations (their tensors are not the model's)."""
    inner = set()
    for module in model.modules():
        if parametrize.is_parametrized(module):
            inner.update(id(m) for m in module.parametrizations.modules())
    return inner


def effective_tensors(model: nn.Module):
    """Yield (qualified name, effective tensor, is_parameter, identity) for every parameter
    and buffer. `identity` is the underlying stored tensor, so tied weights can be deduped."""
    inner = _internal_modules(model)
    for prefix, module in model.named_modules(remove_duplicate=False):
        if id(module) in inner:
            continue
        dot = prefix + "." if prefix else ""
        if parametrize.is_parametrized(module):
            for name, plist in module.parametrizations.items():
                # right_inverse may split the tensor into original0, original1, ...
                original = getattr(plist, "original", None)
                if original is None:
                    original = plist.original0
                yield dot + name, getattr(module, name), isinstance(original, nn.Parameter), original
        for name, tensor in list(module._parameters.items()) + list(module._buffers.items()):
            if tensor is not None and name not in module._non_persistent_buffers_set:
                yield dot + name, tensor, name in module._parameters, tensor
