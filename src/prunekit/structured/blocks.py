"""Layer pruning: remove whole residual blocks (ResNet blocks, transformer layers).

A module is a removable block when its output is its input plus something (through any
chain of residual adds, optionally an activation after): replacing it by `Skip`, which
returns its input, keeps every shape. Blocks are scored by block influence, 1 - cos(input,
output) on calibration data (Men et al. 2024, ShortGPT): a block that barely changes its
input is the cheapest to lose.
"""
import math

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prunekit._utils.inputs import tensors_of
from prunekit._utils.modes import eval_mode
from prunekit.errors import PruneError
from prunekit.graph.trace import op_name

_ADDS = {"add", "__add__", "__radd__", "__iadd__", "add_"}
# Ops that may follow the residual add inside a block (post-norm transformers: BERT).
_ACTIVATIONS = {"relu", "relu_", "gelu", "silu", "relu6", "hardtanh", "leaky_relu", "elu",
                "layer_norm", "dropout"}


class Skip(nn.Module):
    """Stands in for a removed block: returns its input, padded with None to the length of
    the tuple the block returned (0: the block returned a tensor)."""

    def __init__(self, tuple_length: int = 0):
        super().__init__()
        self.tuple_length = tuple_length

    def forward(self, *args, **kwargs):
        x = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))
        return (x,) + (None,) * (self.tuple_length - 1) if self.tuple_length else x

    def extra_repr(self):
        return "removed block"


def _first_tensor(args, kwargs):
    found = tensors_of((args, kwargs))
    return found[0] if found else None


def find_blocks(model: nn.Module, example_inputs) -> dict:
    """{name: tuple_length} of the modules whose output is their input plus a residual."""
    names = {id(m): n for n, m in model.named_modules()}
    calls, stack, keep_alive = {}, [], []

    class Residuals(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = op_name(func)
            if name in _ADDS or name in _ACTIVATIONS:
                operands = {id(t) for t in tensors_of(args)}
                keep_alive.append(out)
                for call in stack:
                    if operands & call["residual"]:
                        call["residual"].add(id(out))
                        call["added"] = call["added"] or name in _ADDS
            return out

    def pre(module, args, kwargs):
        x = _first_tensor(args, kwargs)
        call = {"name": names.get(id(module)), "residual": {id(x)} if x is not None else set(),
                "shape": None if x is None else tuple(x.shape), "added": False}
        keep_alive.append(x)
        stack.append(call)

    def post(module, args, kwargs, output):
        call = stack.pop()
        name, outputs = call["name"], tensors_of(output)
        if name in calls:  # called twice (shared): not a block that can go
            calls[name] = None
            return
        y = outputs[0] if outputs else None
        keep_alive.append(y)
        ok = y is not None and call["added"] and id(y) in call["residual"] and tuple(y.shape) == call["shape"] \
            and isinstance(output, (torch.Tensor, tuple))
        calls[name] = (len(output) if isinstance(output, tuple) else 0) if ok else None

    handles = []
    try:
        for module in model.modules():
            if module is not model:
                handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
                handles.append(module.register_forward_hook(post, with_kwargs=True))
        with eval_mode(model), torch.no_grad(), Residuals():
            model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    found = {n: length for n, length in calls.items() if length is not None}
    # Prefer the entries of a layer stack (ModuleList/Sequential) over sub-blocks (BERT's
    # attention), and a single block over a stage of them: the innermost stacked ones.
    stacked = {n: t for n, t in found.items()
               if isinstance(model.get_submodule(n.rpartition(".")[0]), (nn.ModuleList, nn.Sequential))}
    found = stacked or found
    return {n: t for n, t in found.items() if not any(o.startswith(n + ".") for o in found)}


def block_influence(model, blocks, batches) -> dict:
    """1 - mean cosine similarity between each block's input and output."""
    sums = {name: 0.0 for name in blocks}
    handles = []

    def hook(name):
        def record(module, args, kwargs, output):
            x, y = _first_tensor(args, kwargs), tensors_of(output)[0]
            cos = nn.functional.cosine_similarity(x.flatten(1).float(), y.flatten(1).float(), dim=1)
            sums[name] += float(1 - cos.mean())
        return record

    for name in blocks:
        handles.append(model.get_submodule(name).register_forward_hook(hook(name), with_kwargs=True))
    try:
        with eval_mode(model), torch.no_grad():
            for batch in batches:
                model(*batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: total / len(batches) for name, total in sums.items()}


def _calibration_inputs(calibration, example_inputs):
    if calibration is None:
        return [example_inputs]
    batches = []
    for batch in calibration:
        if isinstance(batch, torch.Tensor):
            batches.append((batch,))
        elif isinstance(batch, (tuple, list)):
            batches.append((batch[0],))
        else:
            raise PruneError("layer pruning takes calibration batches of tensors or (inputs, targets)")
    if not batches:
        raise PruneError("calibration= holds no batches")
    return batches


def choose_blocks(model, example_inputs, ratio, importance, calibration, seed, ignored) -> list:
    """Names of the blocks to remove: floor(ratio * candidates), lowest scores first."""
    blocks = {n: t for n, t in find_blocks(model, example_inputs).items()
              if not any(n == i or n.startswith(i + ".") for i in ignored)}
    if not blocks:
        raise PruneError(f"{type(model).__name__} has no removable residual blocks (a module whose "
                         "output is its input plus a residual)")
    if importance == "block_influence":
        scores = block_influence(model, blocks, _calibration_inputs(calibration, example_inputs))
    elif importance == "random":
        rng = np.random.default_rng(seed)
        scores = dict(zip(blocks, rng.random(len(blocks)).tolist()))
    else:
        raise PruneError(f"granularity 'layer' scores blocks by 'block_influence' or 'random', "
                         f"not {importance!r}")
    n_remove = min(math.floor(ratio * len(blocks) + 1e-9), len(blocks) - 1)
    order = sorted(blocks, key=lambda n: (scores[n], list(blocks).index(n)))
    return [(name, blocks[name]) for name in order[:n_remove]]


def remove_blocks(model, chosen) -> None:
    for name, tuple_length in chosen:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, Skip(tuple_length))


def skipped(model) -> dict:
    """{name: tuple_length} of the blocks removed from `model` (to save with it)."""
    return {n: m.tuple_length for n, m in model.named_modules() if isinstance(m, Skip)}
