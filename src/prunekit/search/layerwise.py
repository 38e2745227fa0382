"""Per-layer sensitivity, and a search for per-layer sparsities that meet a target.

`sensitivity` prunes one layer at a time (magnitude, on a copy) to each sparsity of a grid
and records a validation metric: a curve per layer. `search` reads those curves and spends
a budget greedily: it raises, one grid step at a time, the sparsity of the layer whose next
step loses the least validation accuracy per weight (or MAC) removed, until the target is
met; the chosen allocation is then applied and measured for real. `search_floor` is the
dual: the sparsest allocation along the same path whose measured validation retention
stays at or above a floor. Decisions read the validation split only.
"""
import copy
import re
from dataclasses import dataclass, field

from prunekit import masks
from prunekit.errors import PruneError
from prunekit.search._greedy import SPARSITY_GRID, greedy, last_above
from prunekit.targets import select_modules
from prunekit.unstructured.allocate import prune_layers
from prunekit.unstructured.magnitude import prune_magnitude

GRID = SPARSITY_GRID


def sensitivity(model, evaluate, *, sparsities=GRID[1:], include=None, exclude=None,
                criterion="l1") -> dict:
    """{layer name: {sparsity: evaluate(pruned copy)}} with only that layer pruned; "dense"
    holds evaluate(model). `evaluate(model) -> float` (validation accuracy, say)."""
    chosen = select_modules(model, include, exclude)
    curves = {"dense": evaluate(model)}
    for name, _ in chosen:
        curves[name] = {}
        for s in sparsities:
            trial = copy.deepcopy(model)
            prune_magnitude(trial, s, scope="layer", criterion=criterion, include=[f"^{re.escape(name)}$"])
            curves[name][s] = evaluate(trial)
    return curves


@dataclass
class SearchResult:
    sparsities: dict            # {layer: sparsity}
    sparsity: float             # over the selected layers' weights
    metric: float               # evaluate() of the pruned model (measured, not predicted)
    path: list = field(default_factory=list)  # [(overall sparsity, layer stepped)] as it went


def _weights(chosen):
    return {n: masks.raw_tensor(m).numel() for n, m in chosen}


def _sizes(weights, sizes):
    """What each searched layer's sparsity is weighted by: its weights, or its entry in
    `sizes` (say its MACs; entries for layers not searched are ignored). A layer of size 0,
    such as one the forward never calls, is left dense: pruning it saves nothing."""
    if not sizes:
        return weights
    missing = [name for name in weights if name not in sizes]
    if missing:
        raise PruneError(f"sizes has no entry for layer {', '.join(map(repr, missing))}: give one for every "
                         "searched layer (measure.macs.layer_stats lists their MACs), or exclude it")
    picked = {name: sizes[name] for name in weights}
    if not sum(picked.values()) > 0:
        raise PruneError("the searched layers' sizes (MACs) are all 0: the forward calls none of them, "
                         "so there is nothing to remove; search by weights (sizes=None) or include others")
    return picked


def _path(curves, sizes, grid):
    """Every step [(layer, sparsity)] the greedy takes, one grid step of one layer at a time,
    the step losing the least accuracy per unit of size removed first, until no step is left."""
    def moves(state):
        for name, now in state.items():
            later = grid[grid.index(now) + 1:]
            if later:
                loss = max(_at(curves, name, now) - _at(curves, name, later[0]), 0.0)
                yield name, later[0], loss, (later[0] - now) * sizes[name]
    return greedy(dict.fromkeys(sizes, grid[0]), moves)


def _spend(path, sizes, target, grid):
    """Walk `path` until `target` of the total size is removed, the last step only part-way
    (so the target is met exactly rather than overshot): ({layer: sparsity}, [(overall
    removed, layer)] as it went)."""
    reached, value = dict.fromkeys(sizes, grid[0]), dict.fromkeys(sizes, 0.0)
    total, removed, trace = sum(sizes.values()), 0.0, []
    for name, nxt in path:
        if removed / total >= target - 1e-9:
            break
        step, needed = nxt - reached[name], (target * total - removed) / sizes[name]
        value[name] += min(step, needed)
        removed += min(step, needed) * sizes[name]
        reached[name] = nxt
        trace.append((removed / total, name))
    if removed / total < target - 1e-9:
        raise PruneError(f"the grid tops out at {grid[-1]}: target sparsity {target} is out of reach")
    return value, trace


def _at(curves, name, s):
    return curves["dense"] if s == 0 else curves[name][s]


def search(model, evaluate, target, *, curves=None, grid=GRID, include=None, exclude=None,
           sizes=None) -> SearchResult:
    """Per-layer sparsities reaching `target` overall sparsity (of weights, or of whatever
    `sizes` {layer: count} counts, e.g. MACs) that lose the least validation accuracy by
    the sensitivity curves; applied to `model` (in place) and measured."""
    weights = _weights(select_modules(model, include, exclude))
    sizes = _sizes(weights, sizes)
    curves = curves or sensitivity(model, evaluate, sparsities=grid[1:], include=include, exclude=exclude)
    allocation, path = _spend(_path(curves, sizes, grid), sizes, target, grid)
    prune_layers(model, allocation)
    overall = sum(allocation[n] * weights[n] for n in weights) / sum(weights.values())
    return SearchResult(allocation, overall, evaluate(model), path)


def search_floor(model, evaluate, floor, *, curves=None, grid=GRID, include=None, exclude=None) -> SearchResult:
    """The sparsest allocation along the greedy path whose measured evaluate() stays at or
    above `floor` x the dense value (bisection over the path; each probe is measured on a
    copy). Applied to `model`."""
    chosen = select_modules(model, include, exclude)
    curves = curves or sensitivity(model, evaluate, sparsities=grid[1:], include=include, exclude=exclude)
    sizes = _weights(chosen)
    full = _path(curves, sizes, grid)
    _, path = _spend(full, sizes, grid[-1] * 0.999, grid)
    steps = _allocations_along(full[: len(path)], sizes)

    def measure(taken):
        trial = copy.deepcopy(model)
        prune_layers(trial, steps[taken - 1])
        return evaluate(trial)
    taken, value = last_above(len(steps), measure, floor * curves["dense"])
    if taken == 0:
        return SearchResult({n: 0.0 for n in sizes}, 0.0, curves["dense"], [])
    prune_layers(model, steps[taken - 1])
    overall = sum(steps[taken - 1][n] * sizes[n] for n in sizes) / sum(sizes.values())
    return SearchResult(steps[taken - 1], overall, value, path[:taken])


def _allocations_along(path, sizes):
    """{layer: sparsity} after each step of `path`."""
    reached, out = {n: 0.0 for n in sizes}, []
    for name, sparsity in path:
        reached[name] = sparsity
        out.append(dict(reached))
    return out
