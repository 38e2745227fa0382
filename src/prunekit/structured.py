"""Structured pruning: pk.prune_structured removes whole channels, filters and neurons.

One traced forward finds every set of coupled channels (graph/); a criterion scores them
(criteria/); this module decides how many go from each channel space and removes them
(surgery/), then runs the pruned model once to check every shape it predicted. A reshape
or slice with a fixed size that the trace could not see makes that check fail: the channels
it touches are then kept and the choice is made again. A failure restores the model.
"""
import logging
import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from . import blocks, surgery
from .hf_config import sync_config
from .criteria import get_channel
from .criteria.group import units as unit_order
from .errors import PruneError
from .graph import analyze, check, eval_mode, pin_event
from .graph.labels import NONE
from .graph.trace import tensors_of

log = logging.getLogger(__name__)

_MAX_REPAIRS = 200
GRANULARITIES = ("channel", "head", "layer")


@dataclass
class StructuredResult:
    model: nn.Module
    removed: dict = field(default_factory=dict)  # name -> {"out": [...], "in": [...]} original indexing
    params_before: int = 0
    params_after: int = 0
    kept_fixed: list = field(default_factory=list)  # "op in module" whose channels had to stay
    blocks: list = field(default_factory=list)      # granularity "layer": the removed blocks


@dataclass
class Options:
    ratio: float
    round_to: int
    max_ratio: float
    overrides: dict


def _inputs(example_inputs):
    """A tensor, or a tuple of positional arguments holding tensors (a detection model's
    list of images goes in as `([image],)`)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and tensors_of(example_inputs):
        return tuple(example_inputs)
    raise PruneError("example_inputs must be a tensor or a tuple of positional arguments with "
                     "tensors, for one forward call")


def _ignored(model, ignore):
    """Names of modules in `ignore` (module objects, exact names or regexes). An entry that
    matches no module is an error: a typo would otherwise leave the layer unprotected."""
    if ignore is None:
        return set()
    items = list(ignore) if isinstance(ignore, (list, tuple, set)) else [ignore]
    for item in items:
        if not isinstance(item, (str, nn.Module)):
            raise PruneError(f"ignore entries must be module names, regexes or modules, got {item!r}")
        if isinstance(item, str):
            try:
                re.compile(item)
            except re.error:
                raise PruneError(f"ignore entry {item!r} is not a valid regex") from None
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


def _check_ratio(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value < 1:
        raise PruneError(f"{what} must be a number in [0, 1), got {value!r}")


def _validate(ratio, granularity, scope, round_to, max_ratio, overrides, steps):
    _check_ratio(ratio, "ratio")
    if granularity not in GRANULARITIES:
        raise PruneError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if scope not in ("layer", "global"):
        raise PruneError(f"scope must be 'layer' or 'global', got {scope!r}")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise PruneError(f"round_to must be a positive int, got {round_to!r}")
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, (int, float)) or not 0 < max_ratio <= 1:
        raise PruneError(f"max_ratio must be a number in (0, 1], got {max_ratio!r}")
    if not isinstance(overrides, dict):
        raise PruneError(f"overrides must be a dict {{module regex: ratio}}, got {type(overrides).__name__}")
    for pattern, value in overrides.items():
        try:
            re.compile(pattern)
        except (re.error, TypeError):
            raise PruneError(f"overrides key {pattern!r} is not a valid regex") from None
        _check_ratio(value, f"overrides[{pattern!r}]")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PruneError(f"steps must be a positive int, got {steps!r}")


def _space_ratio(space, options):
    for pattern, value in options.overrides.items():
        if any(re.fullmatch(pattern, m) for m in space.modules):
            return value
    return options.ratio


def _keep_count(n_now, n_first, fraction, options):
    """Units to keep in a space that had `n_first` before the first step and `n_now` now."""
    keep = n_first - math.floor(n_first * fraction + 1e-9)
    keep = max(keep, n_first - math.floor(n_first * options.max_ratio + 1e-9))
    if options.round_to > 1:
        keep = max(options.round_to, options.round_to * round(keep / options.round_to))
    return max(1, min(n_now, keep))


def _lowest(space_units, score_of, n):
    """The `n` lowest-scored units (ties: the first in order)."""
    scores = np.array([score_of[u] for u in space_units])
    return space_units[np.argsort(scores, kind="stable")[:n]]


def _choose_layer(graph, score_of, first_counts, progress, options):
    removed = []
    for space in graph.spaces:
        roots = graph.uf.find(space.units)
        n_first = first_counts.get(space.name, len(roots))
        keep = _keep_count(len(roots), n_first, _space_ratio(space, options) * progress, options)
        removed.extend(_lowest(roots, score_of, len(roots) - keep).tolist())
    return set(removed)


def _choose_global(graph, score_of, first_counts, progress, options):
    """Lowest scores over all spaces, each normalised by its space mean, under each space's
    floor (one unit, round_to, max_ratio)."""
    candidates, floors, total_first, total_now = [], {}, 0, 0
    for index, space in enumerate(graph.spaces):
        roots = graph.uf.find(space.units)
        n_first = first_counts.get(space.name, len(roots))
        total_first, total_now = total_first + n_first, total_now + len(roots)
        floors[index] = _keep_count(len(roots), n_first, 1.0, options)
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


def _keep_one_per_layer(graph, removed, score_of):
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


def _apply_checked(model, inputs, graph, choose, kept_fixed):
    """Remove the chosen units; if the pruned model's shapes differ from the prediction,
    keep the channels of the offending op and choose again (of its whole module, then of
    the module above, if the same op fails again). Returns (removed, cuts)."""
    strikes = {}
    for _ in range(_MAX_REPAIRS):
        removed = choose(graph)
        if not removed:
            return removed, None
        plan = surgery.cuts(model, graph, removed)
        bad = _check_plan(model, inputs, graph, removed, plan)
        if bad is None:
            return removed, plan
        log.info("keeping the channels of %r in %r: its output has a fixed shape", bad.op, bad.module)
        kept_fixed.append(f"{bad.op} in {bad.module or '<model>'}")
        strikes[id(bad)] = strikes.get(id(bad), -1) + 1
        pin_event(graph, model, bad, widen=strikes[id(bad)])
    raise PruneError(f"structured pruning found more than {_MAX_REPAIRS} ops with fixed shapes; "
                     "prune fewer modules (ignore=)")


def _check_plan(model, inputs, graph, removed, plan):
    """Apply `plan`; None if the pruned model's shapes are as predicted, else the first op
    that disagrees (the model is then restored). On the meta device the plan is checked
    before any weight is sliced."""
    masked = any(parametrize.is_parametrized(model.get_submodule(m), t) for m, t in plan.tensors)
    checked_first = graph.needs_check and graph.meta and not masked
    if checked_first:
        bad = check(model, inputs, graph, removed, plan)
        if bad is not None:
            return bad
    snapshot = surgery.Snapshot(surgery.touched(model, plan))
    try:
        surgery.apply(model, plan)
        bad = check(model, inputs, graph, removed) if graph.needs_check and not checked_first else None
    except BaseException:
        snapshot.restore()
        raise
    if bad is not None:
        snapshot.restore()
    return bad


# A layer's input and output channels, as its channel counts see them: over all groups of a
# grouped conv, whose weight holds one group's inputs only.
_CHANNEL_COUNTS = {"in_channels": "in", "in_features": "in", "out_channels": "out", "out_features": "out"}
_NOT_REPORTED = ("bias", "running_mean", "running_var")


def _record_removed(graph, units, plan, origin, removed):
    """Add this step's removed channels to `removed`, in the original indexing: a layer's from
    its channel counts, a BatchNorm's from its weight, a bare parameter's (a layer scale, a
    weight passed to F.conv2d) under "module.name"."""
    table, counted = graph.removal(units), set()
    for a in {(a.module, a.attr): a for a in reversed(graph.attrs)}.values():  # a layer called twice: once
        role = _CHANNEL_COUNTS.get(a.attr)
        if role is None or a.position is not None:
            continue
        counted.add((a.module, role))
        _note_gone(removed, a.module, role, origin, ("attr", a.module, a.attr),
                   graph.keep(a.labels, table))
    roles = {(s.module, s.tensor, s.dim): ("in" if s.role == "in" else "out") for s in graph.slices}
    for (module, tensor), dims in plan.tensors.items():
        for dim, keep in dims.items():
            key, role = (module, tensor, dim), roles[(module, tensor, dim)]
            kept = np.zeros(len(origin[key]), dtype=bool)
            kept[keep.numpy()] = True
            if tensor == "weight" and (module, role) not in counted:
                _note_gone(removed, module, role, origin, key, kept)
            elif tensor not in _NOT_REPORTED and tensor != "weight":
                _note_gone(removed, f"{module}.{tensor}" if module else tensor, role, origin, key, kept)
            else:
                origin[key] = origin[key][kept]


def _note_gone(removed, name, role, origin, key, kept):
    """Entries of `origin[key]` not `kept` go to removed[name][role]; origin keeps the rest."""
    indices = origin.setdefault(key, np.arange(len(kept)))
    if not kept.all():
        removed.setdefault(name, {"out": [], "in": []})[role].extend(indices[~kept].tolist())
    origin[key] = indices[kept]


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _prune_layers(model, inputs, ratio, importance, calibration, seed, ignored, result):
    """Replace the least influential residual blocks by Skip; put them back if shapes change."""
    chosen = blocks.choose_blocks(model, inputs, ratio, importance, calibration, seed, ignored)
    originals = [(name, model.get_submodule(name)) for name, _ in chosen]
    with torch.no_grad(), eval_mode(model):
        before = [tuple(t.shape) for t in tensors_of(model(*inputs))]
    try:
        blocks.remove_blocks(model, chosen)
        with torch.no_grad(), eval_mode(model):
            after = [tuple(t.shape) for t in tensors_of(model(*inputs))]
        if after != before:
            raise PruneError(f"removing blocks {[n for n, _ in chosen]} changed the output shapes")
    except BaseException:
        for name, module in originals:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module)
        raise
    result.blocks = [name for name, _ in chosen]
    return result


def nothing_to_prune(model, what) -> PruneError:
    return PruneError(f"{type(model).__name__} has no prunable {what}: every layer feeds the output, is "
                      "ignored, or has a fixed shape")


def channel_spaces(model, example_inputs, *, ignore=None) -> dict:
    """{space name: number of channels} for every channel space prune_structured would cut
    (a space is named after its first producing layer; `overrides={re.escape(name): r}`
    addresses exactly that space). The model is not changed."""
    graph = analyze(model, _inputs(example_inputs), ignore=_ignored(model, ignore))
    return {space.name: len(space.units) for space in graph.spaces}


def prune_structured(model, example_inputs, *, ratio, granularity="channel", importance=None,
                     scope="layer", ignore=None, round_to=1, calibration=None, overrides=None,
                     max_ratio=1.0, steps=1, seed=None) -> StructuredResult:
    """Remove `ratio` of the channels of every channel space (in place; the model is returned).

    scope "layer" takes `ratio` from each space; "global" takes `ratio` of all units, the
    lowest-scored first, each space's scores divided by that space's mean (so layers of
    different scale compete fairly; use importance="lamp" for LAMP's normalisation).
    `overrides` {module regex: ratio} sets a space's own ratio;
    `max_ratio` caps what any space loses; `round_to` keeps channel counts multiples of it;
    `steps` > 1 prunes in equal steps, re-scoring in between. Output layers keep their
    channels; modules in `ignore` are left exactly as they are.

    granularity "channel" removes channels/filters/neurons (importance default "l2"),
    "head" attention heads (default "l2"), "layer" whole residual blocks: `ratio` of them,
    by "block_influence" (default, on `calibration` or the example inputs) or "random".
    """
    overrides = {} if overrides is None else overrides
    _validate(ratio, granularity, scope, round_to, max_ratio, overrides, steps)
    inputs = _inputs(example_inputs)
    ignored = _ignored(model, ignore)
    result = StructuredResult(model, params_before=param_count(model))
    if granularity == "layer":
        _prune_layers(model, inputs, ratio, importance or "block_influence", calibration, seed, ignored, result)
        result.params_after = param_count(model)
        sync_config(model)
        return result
    criterion = get_channel(importance or "l2")
    options = Options(ratio, round_to, max_ratio, overrides)
    chooser = _choose_layer if scope == "layer" else _choose_global
    snapshot = surgery.Snapshot(list(model.modules())) if steps > 1 else None
    try:
        _prune_steps(model, inputs, steps, granularity, ignored, criterion, calibration, seed, chooser,
                     options, result)
    except BaseException:
        if snapshot is not None:  # one step restores itself; a later step's failure undoes all
            snapshot.restore()
        raise
    for entry in result.removed.values():
        entry["out"].sort()
        entry["in"].sort()
    result.params_after = param_count(model)
    sync_config(model)
    log.debug("structured pruning: %d -> %d parameters", result.params_before, result.params_after)
    return result


def _prune_steps(model, inputs, steps, granularity, ignored, criterion, calibration, seed, chooser, options,
                 result):
    """`steps` rounds of analyse, score, choose and remove; cuts are added to result.removed."""
    first_counts, origin = None, {}
    for step in range(1, steps + 1):
        graph = analyze(model, inputs, ignore=ignored, heads=granularity == "head")
        if first_counts is None:
            if not graph.spaces:
                raise nothing_to_prune(model, "attention heads" if granularity == "head" else "channels")
            first_counts = {s.name: len(s.units) for s in graph.spaces}
        score_of = dict(zip(unit_order(graph).tolist(), criterion(graph, model, calibration, seed)))
        for s in graph.slices:
            origin.setdefault((s.module, s.tensor, s.dim),
                              np.arange(surgery.raw(model, s.module, s.tensor).shape[s.dim]))
        progress = step / steps
        removed, plan = _apply_checked(
            model, inputs, graph,
            lambda g: _keep_one_per_layer(g, chooser(g, score_of, first_counts, progress, options), score_of),
            result.kept_fixed)
        if plan is not None:
            _record_removed(graph, removed, plan, origin, result.removed)
