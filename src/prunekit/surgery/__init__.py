"""Physical removal of channels: slice every recorded tensor, set every recorded attribute.

The graph says, for each weight, bias, running statistic and size attribute, which entries
belong to which unit. `cuts` turns a set of removed units into index lists; `apply` slices
(masked tensors and their masks included, tied weights kept tied) and can be undone.
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit.masks import Mask, raw_tensor
from prunekit.surgery.attributes import SHAPE_ATTRS


@dataclass
class Cuts:
    tensors: dict  # (module, tensor) -> {dim: kept indices (LongTensor)}
    attrs: dict    # (module, attr) -> new value


def cuts(model: nn.Module, graph, removed) -> Cuts:
    """What removing the units whose roots are in `removed` does to each tensor and attribute."""
    tensors, attrs = {}, {}
    removed = graph.removal(removed)
    for s in graph.slices:
        keep = graph.keep(s.labels, removed)
        if not keep.all():
            index = torch.from_numpy(np.flatnonzero(keep))
            tensors.setdefault((s.module, s.tensor), {})[s.dim] = index
    for a in graph.attrs:
        count = int(graph.keep(a.labels, removed).sum())
        if count == len(a.labels):
            continue
        count *= a.scale
        old = getattr(model.get_submodule(a.module), a.attr)
        if a.position is not None:
            value = list(old)
            value[a.position] = count
            count = tuple(value)
        attrs[(a.module, a.attr)] = count
    return Cuts(tensors, attrs)


class Snapshot:
    """Every tensor, child and attribute of some modules, to put back if a later step fails."""

    def __init__(self, modules):
        self.saved = []
        for module in modules:
            self.saved.append((module, dict(module._parameters), dict(module._buffers), dict(module._modules),
                               {k: v for k, v in vars(module).items() if not k.startswith("_")}))
            for container in getattr(module, "parametrizations", {}).values():
                self.saved.extend(Snapshot(list(container.modules())).saved)

    def restore(self) -> None:
        for module, params, buffers, children, attrs in self.saved:
            module._parameters.clear()
            module._parameters.update(params)
            module._buffers.clear()
            module._buffers.update(buffers)
            module._modules.clear()
            module._modules.update(children)
            for key in [k for k in vars(module) if not k.startswith("_") and k not in attrs]:
                delattr(module, key)
            vars(module).update(attrs)


def _sliced(tensor, dims):
    """A new tensor holding the kept entries (index_select copies; a tensor with no cut is cloned)."""
    out = tensor.detach()
    for dim, index in sorted(dims.items()):
        out = out.index_select(dim, index)
    return out if dims else out.clone()


def _replace(module, name, dims, done):
    """Slice `module.name` along `dims`; a tensor shared with another module is sliced once.

    `done` maps id(original) to (original, replacement): holding the original keeps its id
    from being reused by a tensor made later (an id is unique only among live objects), which
    would then be taken for it.
    """
    if parametrize.is_parametrized(module, name):
        plist = module.parametrizations[name]
        plist.original = nn.Parameter(_sliced(plist.original, dims),
                                      requires_grad=plist.original.requires_grad)
        for p in plist:
            if isinstance(p, Mask):
                p.mask = _sliced(p.mask, dims)
        return
    tensor = getattr(module, name)
    if id(tensor) not in done:
        sliced = _sliced(tensor, dims)
        sliced = nn.Parameter(sliced, requires_grad=tensor.requires_grad) \
            if isinstance(tensor, nn.Parameter) else sliced
        done[id(tensor)] = (tensor, sliced)
    setattr(module, name, done[id(tensor)][1])


def touched(model, plan: Cuts) -> list:
    names = {m for m, _ in plan.tensors} | {m for m, _ in plan.attrs}
    return [model.get_submodule(n) for n in sorted(names)]


def _read_only(module, attr) -> bool:
    """A property without a setter (timm's ConvNormAct.in_channels reads its conv's): it
    follows the layers it reads, which are resized themselves."""
    found = getattr(type(module), attr, None)
    return isinstance(found, property) and found.fset is None


def apply(model: nn.Module, plan: Cuts) -> None:
    done, sliced = {}, set()
    for (module_name, tensor_name), dims in plan.tensors.items():
        module = model.get_submodule(module_name)
        # one module under two names (timm CoaT: mlp2 = mlp3 = mlp4, a shared cpe) is one cut
        if (id(module), tensor_name) not in sliced:
            sliced.add((id(module), tensor_name))
            _replace(module, tensor_name, dims, done)
    for (module_name, attr), value in plan.attrs.items():
        module = model.get_submodule(module_name)
        if not _read_only(module, attr):  # files saved before shape_attrs skipped them hold some
            setattr(module, attr, value)


def shape_attrs(model: nn.Module) -> dict:
    """{module: {attr: value}} for the size attributes a module stores itself (not those a
    property computes from its children), to save with it."""
    found = {}
    for name, module in model.named_modules():
        own = vars(module)
        values = {a: own[a] for a in SHAPE_ATTRS
                  if isinstance(own.get(a), (int, tuple)) and not isinstance(own[a], bool)}
        if values:
            found[name] = {a: list(v) if isinstance(v, tuple) else v for a, v in values.items()}
    return found


def raw(model, module_name, tensor_name):
    return raw_tensor(model.get_submodule(module_name), tensor_name)
