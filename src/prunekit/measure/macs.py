"""Dense and effective multiply-accumulates of one forward, from hooks on Conv/Linear layers.

Only the prunable layers are counted (they dominate and are what pruning changes); bias
adds, norms and activations are left out, as in the usual MAC conventions. A layer called
several times in one forward is counted every time.
"""
import math

import torch
from torch import nn

from prunekit.measure import _run
from prunekit.targets import prunable_modules


def _layer_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    kernel = math.prod(getattr(module, "kernel_size", (1,)))
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # each input element is scattered onto out_channels/groups x kernel outputs
        return inputs[0].numel() * (module.out_channels // module.groups) * kernel
    return output.numel() * (module.in_channels // module.groups) * kernel


def layer_stats(model: nn.Module, inputs: tuple) -> list:
    """One forward (eval, no_grad) with hooks: per prunable layer a dict with name, macs,
    input_elems, numel, nonzeros, itemsize. Hooks are removed even if the forward fails."""
    layers = {}
    for name, module in prunable_modules(model):
        layers.setdefault(id(module), {"name": name, "module": module, "macs": 0, "input_elems": 0})

    def hook(module, args, output):
        entry = layers[id(module)]
        entry["macs"] += _layer_macs(module, args, output)
        entry["input_elems"] += args[0].numel() if args and isinstance(args[0], torch.Tensor) else 0

    with _run.inference(model), _run.forward_hooks((e["module"], hook) for e in layers.values()):
        _run.forward(model, inputs)
        for entry in layers.values():
            weight = entry.pop("module").weight
            entry.update(numel=weight.numel(), itemsize=weight.element_size(),
                         nonzeros=int(torch.count_nonzero(weight)) if weight.numel() else 0)
    return list(layers.values())


def totals(stats: list) -> dict:
    """macs, effective_macs (each layer's MACs x its weight density), theoretical speedup."""
    dense = sum(s["macs"] for s in stats)
    effective = sum(s["macs"] * s["nonzeros"] / s["numel"] for s in stats if s["numel"])
    speedup = dense / effective if effective else (float("inf") if dense else 1.0)
    return {"macs": dense, "effective_macs": effective, "theoretical_speedup_vs_dense": speedup}
