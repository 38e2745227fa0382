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
from prunekit.targets import select_modules
from prunekit.unstructured.allocate import prune_layers
from prunekit.errors import PruneError
from prunekit.unstructured.magnitude import prune_magnitude

GRID = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


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
    path: list = field(default_factory=list)  # [(overall sparsity, predicted drop)] as it went


def _weights(chosen):
    return {n: masks.raw_tensor(m).numel() for n, m in chosen}


def _greedy(curves, sizes, target, grid):
    """Layer sparsities from the curves: cheapest accuracy per weight first, up to `target`.
    The last step stops part-way, so the target is met exactly rather than overshot."""
    level, value = {n: 0 for n in sizes}, {n: 0.0 for n in sizes}
    total = sum(sizes.values())
    removed, path = 0.0, []
    while removed / total < target - 1e-9:
        best = _cheapest_step(curves, sizes, level, grid)
        if best is None:
            raise PruneError(f"the grid tops out at {grid[-1]}: target sparsity {target} is out of reach")
        step = grid[level[best] + 1] - grid[level[best]]
        needed = (target * total - removed) / sizes[best]
        value[best] += min(step, needed)
        removed += min(step, needed) * sizes[best]
        level[best] += 1
        path.append((removed / total, best))
    return value, path


def _cheapest_step(curves, sizes, level, grid):
    """The layer whose next grid step loses the least accuracy per unit of size removed."""
    best, best_rate = None, None
    for name in sizes:
        if level[name] + 1 >= len(grid):
            continue
        now, nxt = grid[level[name]], grid[level[name] + 1]
        rate = max(_at(curves, name, now) - _at(curves, name, nxt), 0.0) / ((nxt - now) * sizes[name])
        if best is None or rate < best_rate:
            best, best_rate = name, rate
    return best


def _at(curves, name, s):
    return curves["dense"] if s == 0 else curves[name][s]


def search(model, evaluate, target, *, curves=None, grid=GRID, include=None, exclude=None,
           sizes=None) -> SearchResult:
    """Per-layer sparsities reaching `target` overall sparsity (of weights, or of whatever
    `sizes` {layer: count} counts, e.g. MACs) that lose the least validation accuracy by
    the sensitivity curves; applied to `model` (in place) and measured."""
    chosen = select_modules(model, include, exclude)
    curves = curves or sensitivity(model, evaluate, sparsities=grid[1:], include=include, exclude=exclude)
    weights = _weights(chosen)
    allocation, path = _greedy(curves, sizes or weights, target, grid)
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
    _, path = _greedy(curves, sizes, grid[-1] * 0.999, grid)
    steps = _allocations_along(path, sizes, grid)
    low, high, best = 0, len(steps) - 1, None
    while low <= high:  # retention falls (mostly) monotonically along the path
        middle = (low + high) // 2
        trial = copy.deepcopy(model)
        prune_layers(trial, steps[middle])
        value = evaluate(trial)
        if value >= floor * curves["dense"]:
            best, low = (middle, value), middle + 1
        else:
            high = middle - 1
    if best is None:
        return SearchResult({n: 0.0 for n in sizes}, 0.0, curves["dense"], [])
    prune_layers(model, steps[best[0]])
    overall = sum(steps[best[0]][n] * sizes[n] for n in sizes) / sum(sizes.values())
    return SearchResult(steps[best[0]], overall, best[1], path[: best[0] + 1])


def _allocations_along(path, sizes, grid):
    level, out = {n: 0 for n in sizes}, []
    for _, name in path:
        level[name] += 1
        out.append({n: grid[level[n]] for n in sizes})
    return out
