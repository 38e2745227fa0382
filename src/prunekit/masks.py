"""Boolean masks held as parametrizations.

`module.weight` becomes `original * mask`, so pruned weights are exactly zero in every
forward, whatever the optimizer (momentum, weight decay) does to `original`. Unlike
torch.nn.utils.prune's `weight_orig` renaming, a parametrization keeps `deepcopy`,
`state_dict` round trips and DDP working.
"""
import logging

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit.errors import PruneError
from prunekit.targets import prunable_modules, stored_weight

log = logging.getLogger(__name__)

class Mask(nn.Module):
    """Parametrization `w -> w * mask` with a boolean buffer (1 byte per weight)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool).contiguous())  # edited in place by regrowth

    def forward(self, weight):
        return weight * self.mask


def _mask_module(module: nn.Module, name: str):
    """The Mask parametrization on `module.name`, or None."""
    if not parametrize.is_parametrized(module, name):
        return None
    return next((p for p in module.parametrizations[name] if isinstance(p, Mask)), None)


def get_mask(module: nn.Module, name: str = "weight"):
    """The boolean keep-mask of `module.name`, or None if it is not masked."""
    found = _mask_module(module, name)
    return None if found is None else found.mask


def raw_tensor(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The stored tensor behind `module.name` (the parametrization's `original` if masked)."""
    if parametrize.is_parametrized(module, name):
        return module.parametrizations[name].original
    return getattr(module, name)


def attach(module: nn.Module, mask: torch.Tensor, name: str = "weight") -> None:
    """Mask `module.name` with `mask` (True = keep); composes with an existing mask by AND."""
    existing = _mask_module(module, name)
    if existing is not None:
        existing.mask.logical_and_(mask)
    else:
        # unsafe=True skips a trial forward of the parametrization on the full tensor,
        # which would allocate a second full-size float copy for huge layers.
        parametrize.register_parametrization(module, name, Mask(mask), unsafe=True)
        existing = _mask_module(module, name)
    # Zero the stored values too, so saved raw weights and optimizer state agree with the mask.
    with torch.no_grad():
        raw_tensor(module, name).masked_fill_(~existing.mask, 0)  # no float-sized temporary


def masked_modules(model: nn.Module):
    """[(qualified name, module, tensor name)] for every masked tensor in the model."""
    found = []
    for mod_name, module in model.named_modules():
        for tensor_name in list(getattr(module, "parametrizations", {}) or {}):
            if _mask_module(module, tensor_name) is not None:
                found.append((mod_name, module, tensor_name))
    return found


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake every mask into a plain weight; no parametrizations or hooks of ours remain."""
    for mod_name, module, tensor_name in masked_modules(model):
        if len(module.parametrizations[tensor_name]) != 1:
            raise PruneError(f"{mod_name}.{tensor_name} has other parametrizations besides a "
                             "prunekit mask; remove them before make_permanent")
    for _, module, tensor_name in masked_modules(model):
        # A deepcopy shares its parametrized class with the original, and removing a
        # parametrization deletes the property from that class: give the module its own first.
        cls = type(module)
        module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
    return model


def sparsity(model: nn.Module) -> dict:
    """{"global": {"params", "zeros", "sparsity"}, "layers": {name: {...}}} over prunable
    weights; every layer is reported, a weight shared by several layers counts once in global."""
    layers, total, zeros, seen = {}, 0, 0, set()
    for name, module in prunable_modules(model):
        weight = module.weight
        n, z = weight.numel(), int(weight.numel() - torch.count_nonzero(weight))
        layers[name] = {"params": n, "zeros": z, "sparsity": z / n if n else 0.0}
        if id(stored_weight(module)) not in seen:
            seen.add(id(stored_weight(module)))
            total, zeros = total + n, zeros + z
    return {"global": {"params": total, "zeros": zeros, "sparsity": zeros / total if total else 0.0},
            "layers": layers}
