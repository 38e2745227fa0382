"""Which units go: per channel space ("layer" scope) or across spaces ("global" scope).

A chooser takes the graph, each unit's score, every space's unit count before the first step,
the fraction of the run done (`progress`, for pruning in steps) and the Options, and returns
the set of unit roots to remove.
"""
import math
import re
from dataclasses import dataclass

import numpy as np

from prunekit.graph.labels import NONE


@dataclass
class Options:
    ratio: float
    round_to: int
    max_ratio: float
    overrides: dict


def space_ratio(space, options):
    for pattern, value in options.overrides.items():
        if any(re.fullmatch(pattern, m) for m in space.modules):
            return value
    return options.ratio


def keep_count(n_now, n_first, fraction, options):
    """Units to keep in a space that had `n_first` before the first step and `n_now` now."""
    keep = n_first - math.floor(n_first * fraction + 1e-9)
    keep = max(keep, n_first - math.floor(n_first * options.max_ratio + 1e-9))
    if options.round_to > 1:
        keep = max(options.round_to, options.round_to * round(keep / options.round_to))
    return max(1, min(n_now, keep))


def lowest(space_units, score_of, n):
    """The `n` lowest-scored units (ties: the first in order)."""
    scores = np.array([score_of[u] for u in space_units])
    return space_units[np.argsort(scores, kind="stable")[:n]]


def choose_layer(graph, score_of, first_counts, progress, options):
    removed = []
    for space in graph.spaces:
        roots = graph.uf.find(space.units)
        n_first = first_counts.get(space.name, len(roots))
        keep = keep_count(len(roots), n_first, space_ratio(space, options) * progress, options)
        removed.extend(lowest(roots, score_of, len(roots) - keep).tolist())
    return set(removed)


def choose_global(graph, score_of, first_counts, progress, options):
    """Lowest scores over all spaces, each normalised by its space mean, under each space's
    floor (one unit, round_to, max_ratio)."""
    candidates, floors, total_first, total_now = [], {}, 0, 0
    for index, space in enumerate(graph.spaces):
        roots = graph.uf.find(space.units)
        n_first = first_counts.get(space.name, len(roots))
        total_first, total_now = total_first + n_first, total_now + len(roots)
        floors[index] = keep_count(len(roots), n_first, 1.0, options)
        scores = np.array([score_of[u] for u in roots])
        finite = scores[np.isfinite(scores)]
        mean = finite.mean() if len(finite) and finite.mean() > 0 else 1.0
        candidates += [(s / mean, index, u) for s, u in zip(scores.tolist(), roots.tolist())]
    target = math.floor(total_first * options.ratio * progress + 1e-9) - (total_first - total_now)
    left = {i: len(graph.uf.find(s.units)) for i, s in enumerate(graph.spaces)}
    chosen = {i: [] for i in left}
    for score, index, unit in sorted(candidates, key=lambda c: c[0]):
        if target <= 0 or not np.isfinite(score):
            break
        if left[index] > floors[index]:
            chosen[index].append(unit)
            left[index] -= 1
            target -= 1
    removed = []
    for index, units in chosen.items():
        if options.round_to > 1:  # keep a multiple of round_to: give back the last choices
            surplus = left[index] % options.round_to
            units = units[: len(units) - (options.round_to - surplus) % options.round_to] if surplus else units
        removed += units
    return set(removed)


def keep_one_per_layer(graph, removed, score_of):
    """Where the choice takes every channel a layer makes or reads (an inception branch whose
    weights all score below its siblings' in the concatenated stream), its best-scored unit
    stays: a layer of width 0 cannot run."""
    for s in graph.slices:
        if s.role == "follow" or not removed:
            continue
        roots = np.unique(graph.uf.find(s.labels[s.labels != NONE])).tolist()
        if roots and all(r in removed for r in roots):
            removed.discard(max(roots, key=lambda r: score_of.get(r, 0.0)))
    return removed
