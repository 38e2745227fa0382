"""Per-layer sparsities for magnitude pruning.

- uniform: every layer at the target.
- global: one magnitude threshold over all layers (the per-layer result is read back).
- erk: Erdos-Renyi-Kernel (Evci et al. 2020): a layer's density is proportional to
  (sum of its weight dims) / (product of its weight dims), scaled to the target; a layer
  that would exceed density 1 is kept dense and the rest rescaled.
- lamp: LAMP (Lee et al. 2021): score w_u^2 / sum of w_v^2 over the weights of the same
  layer at least as large, then one global threshold on the scores.
"""
import copy

import torch

from prunekit import masks
from prunekit._utils.validate import check_range
from prunekit.errors import PruneError
from prunekit.targets import select_modules
from prunekit.unstructured.magnitude import prune_magnitude

METHODS = ("uniform", "global", "erk", "lamp")


def lamp_scores(weights: torch.Tensor) -> torch.Tensor:
    """LAMP score of every weight of one layer (same shape)."""
    flat = weights.detach().reshape(-1).float().square()
    ordered, index = torch.sort(flat)
    suffix = ordered.flip(0).cumsum(0).flip(0)
    scores = torch.empty_like(flat)
    scores[index] = ordered / suffix.clamp_min(torch.finfo(torch.float32).tiny)
    return scores.view(weights.shape)


def erk_densities(shapes: dict, density: float) -> dict:
    """{name: density} with sum(density * numel) = density * total, dense layers capped at 1."""
    numel = {n: _prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / numel[n] for n, s in shapes.items()}
    dense, budget = set(), density * sum(numel.values())
    while True:
        free = [n for n in shapes if n not in dense]
        left = budget - sum(numel[n] for n in dense)
        if not free or left <= 0:
            return {n: 1.0 if n in dense else 0.0 for n in shapes}
        scale = left / sum(raw[n] * numel[n] for n in free)
        over = [n for n in free if raw[n] * scale > 1]
        if not over:
            return {n: 1.0 if n in dense else raw[n] * scale for n in shapes}
        dense.update(over)


def _prod(shape):
    out = 1
    for d in shape:
        out *= d
    return out


def layer_sparsities(model, sparsity, method="erk", *, include=None, exclude=None) -> dict:
    """{module name: sparsity} that `method` gives at overall `sparsity` (the model is not
    changed: global and lamp are computed on a copy)."""
    if method not in METHODS:
        raise PruneError(f"allocation must be one of {', '.join(METHODS)}, got {method!r}")
    sparsity = check_range("sparsity", sparsity, 0, 1)
    chosen = select_modules(model, include, exclude)
    if method == "uniform":
        return {name: float(sparsity) for name, _ in chosen}
    if method == "erk":
        shapes = {name: tuple(masks.raw_tensor(m).shape) for name, m in chosen}
        return {n: 1 - d for n, d in erk_densities(shapes, 1 - sparsity).items()}
    trial = copy.deepcopy(model)
    criterion = "l1" if method == "global" else lamp_scores
    report = prune_magnitude(trial, sparsity, scope="global", criterion=criterion, include=include, exclude=exclude)
    return {name: layer["sparsity"] for name, layer in report.layers.items()}


def prune_layers(model, targets: dict, criterion="l1") -> dict:
    """Magnitude-prune each named layer to its own sparsity (a layer at 0 is left unmasked);
    returns {name: sparsity reached}."""
    modules = dict(model.named_modules())
    return {name: prune_magnitude(modules[name], target, scope="layer", criterion=criterion).sparsity
            if target > 0 else 0.0 for name, target in targets.items()}


def prune_allocated(model, sparsity, method="erk", *, include=None, exclude=None, criterion="l1"):
    """Magnitude-prune each layer to the sparsity `method` allocates it; returns
    {name: sparsity reached}."""
    targets = layer_sparsities(model, sparsity, method, include=include, exclude=exclude)
    return prune_layers(model, targets, criterion)
