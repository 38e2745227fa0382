"""Physical removal of channels: one stateless handler per layer type.

A handler is `fn(module, dim, keep)`: `dim` is "out" (the channels this layer produces) or
"in" (the channels it consumes), `keep` the sorted indices to keep. It slices every tensor
(weights, biases, running stats, masks) and updates the attributes that describe the shape.
"""
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import PruneError
from ..masks import Mask

HANDLERS: dict = {}


def register(*types):
    def wrap(fn):
        for t in types:
            HANDLERS[t] = fn
        return fn
    return wrap


def has_handler(module: nn.Module) -> bool:
    return any(cls in HANDLERS for cls in type(module).__mro__)


def handler_for(module: nn.Module, name: str = "?"):
    """The handler for `module`'s type (nearest in its MRO), or a PruneError naming it."""
    for cls in type(module).__mro__:
        if cls in HANDLERS:
            return HANDLERS[cls]
    raise PruneError(f"no surgery handler for {type(module).__name__} at {name!r}; "
                     "exclude it with ignore= or register one with prunekit.surgery.register")


def slice_tensor(module: nn.Module, name: str, dim: int, keep: torch.Tensor) -> None:
    """Keep `keep` along `dim` of parameter/buffer `name`, masked ones included."""
    if parametrize.is_parametrized(module, name):
        plist = module.parametrizations[name]
        plist.original = nn.Parameter(plist.original.detach().index_select(dim, keep).clone(),
                                      requires_grad=plist.original.requires_grad)
        for p in plist:
            if isinstance(p, Mask):
                p.mask = p.mask.index_select(dim, keep).clone()
        return
    tensor = getattr(module, name, None)
    if tensor is None:
        return
    sliced = tensor.detach().index_select(dim, keep).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, sliced)


def apply(module: nn.Module, dim: str, keep: torch.Tensor, name: str = "?") -> None:
    handler_for(module, name)(module, dim, keep)


from . import layers as _layers  # noqa: E402,F401  (registers the built-in handlers)
