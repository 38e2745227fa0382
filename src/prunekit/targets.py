"""What is prunable, defined once: the weights of Linear / ConvNd / ConvTransposeNd layers,
each stored tensor counted once however many layers share it; chosen by module-name regexes.

Everything here reads `module.weight`, the effective tensor: for a weight masked with
`torch.nn.utils.parametrize` that is `original * mask`, with exact zeros, which is what a
deployed model computes with.
"""
import re

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit._utils.validate import compile_patterns
from prunekit.errors import PruneError

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
                  nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def stored_weight(module: nn.Module):
    """The tensor stored behind `module.weight` (a masked weight's `original`): the identity
    by which tied weights are recognised."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations["weight"].original
    return module.weight


def prunable_modules(model: nn.Module) -> list:
    """[(name, module)] of every Linear / ConvNd / ConvTransposeNd with a weight, in
    `model.named_modules()` order; a layer whose weight is shared with another is listed too
    (each computes with it: MACs count both)."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, PRUNABLE_TYPES) and getattr(module, "weight", None) is not None]


def prunable_weights(model: nn.Module) -> list:
    """prunable_modules with one entry per stored weight: a weight shared (tied) by several
    layers is counted once, under its first layer's name."""
    seen, found = set(), []
    for name, module in prunable_modules(model):
        if id(stored_weight(module)) not in seen:
            seen.add(id(stored_weight(module)))
            found.append((name, module))
    return found


def prunable_count(model: nn.Module) -> int:
    """Prunable weights of the model, masked or not, each stored tensor once."""
    return sum(m.weight.numel() for _, m in prunable_weights(model))


def select_modules(model: nn.Module, include=None, exclude=None, types=PRUNABLE_TYPES):
    """[(name, module)] of `types` whose name matches an include regex and no exclude regex."""
    if not isinstance(model, nn.Module):
        raise PruneError(f"expected a torch.nn.Module, got {type(model).__name__}")
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, types)]
    if not candidates:
        raise PruneError(f"{type(model).__name__} has nothing to prune: no "
                         f"{'/'.join(t.__name__ for t in types)} layers")
    includes, excludes = compile_patterns(include, "include"), compile_patterns(exclude, "exclude")
    for pattern in includes + excludes:
        if not any(pattern.search(n) for n, _ in candidates):
            names = ", ".join(n for n, _ in candidates[:8]) + (", ..." if len(candidates) > 8 else "")
            raise PruneError(f"pattern {pattern.pattern!r} matches no prunable module; they are: {names}")
    chosen = [(n, m) for n, m in candidates
              if (not includes or any(p.search(n) for p in includes))
              and not any(p.search(n) for p in excludes)]
    if not chosen:
        raise PruneError("include/exclude patterns leave no module to prune")
    return chosen


def _internal_modules(model: nn.Module) -> set:
    """ids of the modules that implement parametrizations (their tensors are not the model's)."""
    inner = set()
    for module in model.modules():
        if parametrize.is_parametrized(module):
            inner.update(id(m) for m in module.parametrizations.modules())
    return inner


def _entries(model: nn.Module):
    """Yield (qualified name, module, attribute, stored tensor, is_parameter) for every
    persistent parameter and buffer, a masked tensor under its plain name; nothing computed."""
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
                yield dot + name, module, name, original, isinstance(original, nn.Parameter)
        for name, tensor in list(module._parameters.items()) + list(module._buffers.items()):
            if tensor is not None and name not in module._non_persistent_buffers_set:
                yield dot + name, module, name, tensor, name in module._parameters


def effective_tensors(model: nn.Module):
    """Yield (qualified name, effective tensor, is_parameter, identity) for every parameter
    and buffer. `identity` is the underlying stored tensor, so tied weights can be deduped."""
    for name, module, attribute, stored, is_param in _entries(model):
        yield name, getattr(module, attribute), is_param, stored


def tied_names(model: nn.Module, state: dict) -> dict:
    """{name: earlier name} for each tensor of `state` (effective_state(model)) stored as the
    same tensor as an earlier one and equal to it in effect (a tied weight, masked alike):
    saved and counted once."""
    first, tied = {}, {}
    for name, _, _, stored, _ in _entries(model):
        if id(stored) not in first:
            first[id(stored)] = name
        elif name in state and torch.equal(state[name], state[first[id(stored)]]):
            tied[name] = first[id(stored)]
    return tied


def effective_state(model: nn.Module) -> dict:
    """{qualified name: effective tensor} of all persistent parameters and buffers, contiguous,
    on CPU, with tied tensors copied (safetensors refuses shared storage)."""
    state, seen = {}, set()
    for name, tensor, _, _ in effective_tensors(model):
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.numel() and tensor.data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        state[name] = tensor
    return state


def resolve_ignore(model, ignore) -> set:
    """Names of modules in `ignore` (module objects, exact names or regexes). An entry that
    matches no module is an error: a typo would otherwise leave the layer unprotected."""
    if ignore is None:
        return set()
    items = list(ignore) if isinstance(ignore, (list, tuple, set)) else [ignore]
    for item in items:
        if not isinstance(item, (str, nn.Module)):
            raise PruneError(f"ignore entries must be module names, regexes or modules, got {item!r}")
        if isinstance(item, str):
            compile_patterns(item, "ignore entry")
    names, matched = set(), set()
    for name, module in model.named_modules():
        for index, item in enumerate(items):
            if module is item or (isinstance(item, str) and (name == item or re.fullmatch(item, name))):
                names.add(name)
                matched.add(index)
    missing = [repr(item) if isinstance(item, str) else type(item).__name__
               for index, item in enumerate(items) if index not in matched]
    if missing:
        raise PruneError(f"ignore entry {', '.join(missing)} matches no module of {type(model).__name__}")
    return names
