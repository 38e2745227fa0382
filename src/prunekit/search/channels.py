"""Per-space channel ratios that meet a cost target: parameters, MACs, or latency measured here.

`channel_curves` removes channels from one channel space at a time (on copies) at each ratio
of a grid, and records the validation metric and the cost kept (a fraction of the dense
model's: parameters, MACs, or latency timed side by side with the dense model).

`search_channels` spends the budget greedily: it raises the ratio of the space whose next
step loses the least validation metric per unit of cost saved. Savings do not add up (a
conv's MACs shrink with its input and its output channels both; latency is not linear),
so the allocation is applied and its cost *measured*, and the greedy goes on until the
measured cost meets the target; the last step is then bisected, and (for parameters and
MACs) the spaces cut get back whatever channels the budget still allows, so the target is
met closely rather than overshot. `search_channels_floor` is the dual: the cheapest allocation
along the same path whose measured validation retention stays at or above a floor.
`search_channels(joint=True)` scores every step on a copy cut to the allocation so far plus
that step (NetAdapt's greedy, without its short fine-tuning): costlier, one evaluate() per
space per step, but it sees cuts that hurt only together, which the curves cannot.
Decisions read only what `evaluate` reads (a validation split). The curves cost one
evaluate() per space and grid ratio (pass them back in through `curves=` to reuse them).
"""
import copy
import re
from dataclasses import dataclass, field

from prunekit._utils.inputs import as_inputs
from prunekit._utils.validate import check_range
from prunekit.errors import PruneError
from prunekit.measure import latency
from prunekit.measure.macs import layer_stats, totals
from prunekit.search._greedy import CHANNEL_GRID, greedy, last_above, smallest_meeting
from prunekit.structured.prune import channel_spaces, param_count, prune_structured

COSTS = ("params", "macs", "latency")
GRID = CHANNEL_GRID


@dataclass
class ChannelSearchResult:
    ratios: dict               # {space name: ratio of its channels removed}
    kept: float                # measured cost of the result / the dense model's
    metric: float              # evaluate() of the result (measured, not predicted)
    removed: dict = field(default_factory=dict)  # prune_structured's res.removed
    path: list = field(default_factory=list)     # [(space, ratio)] in the order taken


def cost_meter(cost, example_inputs, *, repeats=20, threads=1):
    """kept(dense, trial) -> the trial's cost as a fraction of the dense model's. Latency:
    both timed in one interleaved loop (medians), on `threads` threads."""
    inputs = as_inputs(example_inputs)
    if cost == "params":
        return lambda dense, trial: param_count(trial) / param_count(dense)
    if cost == "macs":
        return lambda dense, trial: _macs(trial, inputs) / _dense_macs(dense, inputs)
    if cost == "latency":
        def kept(dense, trial):
            timed = latency.time_models({"dense": dense, "trial": trial}, inputs, repeats=repeats,
                                        warmup=3, threads=threads)
            return timed["trial"]["median_s"] / timed["dense"]["median_s"]
        return kept
    raise PruneError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")


def _macs(model, inputs):
    return totals(layer_stats(model, inputs))["macs"]


def _dense_macs(model, inputs):
    macs = _macs(model, inputs)
    if macs == 0:  # only Conv/Linear layers are counted: weights passed to F.linear are not
        raise PruneError(f"{type(model).__name__}'s forward calls no Conv/Linear layer, so it has no MACs to "
                         "remove: search with cost='params' or 'latency'")
    return macs


def apply_ratios(model, example_inputs, ratios, **options):
    """Remove ratios[space] of each named space's channels (in place); other spaces keep
    theirs. `options` go to prune_structured (importance, ignore, round_to, calibration)."""
    overrides = {re.escape(name): r for name, r in ratios.items() if r > 0}
    return prune_structured(model, example_inputs, ratio=0.0, overrides=overrides, **options)


def channel_curves(model, example_inputs, evaluate, kept, *, grid=GRID, **options) -> dict:
    """{"dense": evaluate(model), space: {ratio: (metric, cost kept)}} with only that space cut."""
    curves = {"dense": evaluate(model)}
    for name in channel_spaces(model, example_inputs, ignore=options.get("ignore")):
        curves[name] = {}
        for ratio in grid[1:]:
            trial = copy.deepcopy(model)
            apply_ratios(trial, example_inputs, {name: ratio}, **options)
            curves[name][ratio] = (evaluate(trial), kept(model, trial))
    return curves


def _point(curves, name, ratio):
    return (curves["dense"], 1.0) if ratio == 0 else curves[name][ratio]


def _greedy_path(curves, grid):
    """Every step [(space, ratio)] the greedy takes from no pruning until no step saves cost:
    of every space's later grid ratios, the move that loses the least metric per unit of
    cost saved (a move that saves nothing is never taken)."""
    def moves(ratios):
        for name, now in ratios.items():
            metric_now, kept_now = _point(curves, name, now)
            for ratio in grid[grid.index(now) + 1:]:
                metric, kept = _point(curves, name, ratio)
                yield name, ratio, max(metric_now - metric, 0.0), kept_now - kept
    return greedy({name: 0.0 for name in curves if name != "dense"}, moves)


def _allocation(path, names, upto):
    ratios = {name: 0.0 for name in names}
    for name, ratio in path[:upto]:
        ratios[name] = ratio
    return ratios


def _measured(model, example_inputs, ratios, kept, options):
    trial = copy.deepcopy(model)
    apply_ratios(trial, example_inputs, ratios, **options)
    return kept(model, trial)


def _check(cost, value, what, low_open=True):
    if cost not in COSTS:
        raise PruneError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
    check_range(what, value, 0, 1, "()" if low_open else "(]")


def search_channels(model, example_inputs, evaluate, target, *, cost="macs", curves=None, grid=GRID,
                    repeats=20, threads=1, joint=False, **options) -> ChannelSearchResult:
    """Per-space channel ratios that remove `target` of the model's cost (parameters, MACs or
    measured latency) losing the least validation metric; applied to `model` in place.
    joint=True scores every step on top of the allocation so far (NetAdapt's greedy), not
    from the one-space-at-a-time curves: one evaluate() per space per step, but the cuts'
    interactions are seen."""
    _check(cost, target, "target")
    kept = cost_meter(cost, example_inputs, repeats=repeats, threads=threads)
    goal = 1 - target
    if joint:
        names = channel_spaces(model, example_inputs, ignore=options.get("ignore"))
        path = _joint_path(model, example_inputs, evaluate, kept, goal, grid, names, options)
    else:
        curves = curves or channel_curves(model, example_inputs, evaluate, kept, grid=grid, **options)
        names = [n for n in curves if n != "dense"]
        path = _curves_path(model, example_inputs, curves, kept, goal, grid, names, options)
    if path is None:
        raise PruneError(f"a {cost} target of {target} is out of reach: cutting every space to its grid's "
                         f"top ({grid[-1]}) does not remove that much")
    return _bisect_and_finish(model, example_inputs, evaluate, kept, goal, path, names, cost, options)


def _curves_path(model, example_inputs, curves, kept, goal, grid, names, options):
    """The greedy path read off the one-space curves, up to the first step whose measured
    cost meets `goal`; None if the whole path does not meet it."""
    path, predicted = _greedy_path(curves, grid), 1.0
    for taken, (name, ratio) in enumerate(path, 1):
        before = _allocation(path, names, taken - 1)
        predicted -= _point(curves, name, before[name])[1] - _point(curves, name, ratio)[1]
        if predicted > goal:
            continue  # predicted savings only overestimate: no need to measure yet
        if _measured(model, example_inputs, _allocation(path, names, taken), kept, options) <= goal:
            return path[:taken]
    return None


def _joint_path(model, example_inputs, evaluate, kept, goal, grid, names, options):
    """Greedy steps, each scored on a copy cut to the allocation so far plus the step, until
    the measured cost meets `goal`: [(space, ratio)] in the order taken; None if cutting every
    space to the grid's top does not meet it."""
    ratios = dict.fromkeys(names, 0.0)
    measured = {tuple(ratios.values()): (evaluate(model), 1.0)}  # allocation -> (metric, cost kept)

    def moves(now):
        metric_now, kept_now = measured[tuple(now.values())]
        for name in names:
            later = grid[grid.index(now[name]) + 1:]
            if not later:
                continue
            step = {**now, name: later[0]}
            trial = copy.deepcopy(model)
            apply_ratios(trial, example_inputs, step, **options)
            measured[tuple(step.values())] = metric, cost = evaluate(trial), kept(model, trial)
            yield name, later[0], metric_now - metric, kept_now - cost  # loss < 0: the cut helped

    met = lambda now: measured[tuple(now.values())][1] <= goal  # noqa: E731
    path = greedy(ratios, moves, done=met)  # updates `ratios` as it goes
    return path if met(ratios) else None


def _bisect_and_finish(model, example_inputs, evaluate, kept, goal, path, names, cost, options):
    """Bisect the path's last step to just meet `goal`, give back what the budget allows,
    and apply the allocation to `model`."""
    ratios, before = _allocation(path, names, len(path)), _allocation(path, names, len(path) - 1)
    name = path[-1][0]
    ratios[name] = _bisect(model, example_inputs, ratios, name, before[name], kept, goal, options)
    if cost != "latency":  # timing noise exceeds the slack a refill could win back
        _refill(model, example_inputs, ratios, path, kept, goal, options)
    return _finish(model, example_inputs, evaluate, kept, ratios, path, options)


def _bisect(model, example_inputs, ratios, name, low, kept, goal, options, rounds=6):
    """The smallest ratio of `name` in (low, ratios[name]] whose measured cost meets `goal`."""
    return smallest_meeting(low, ratios[name], lambda r: _measured(model, example_inputs, {**ratios, name: r}, kept,
                                                                   options) <= goal, rounds)


def _refill(model, example_inputs, ratios, path, kept, goal, options):
    """Give back what the budget still allows: channel counts are whole, so the bisected
    step can overshoot the target; each cut space, the last-cut (costliest per saving)
    first, gets back as many channels as keep the measured cost within `goal`."""
    latest_first = list(dict.fromkeys(name for name, _ in reversed(path)))
    for name in latest_first:
        if ratios[name] == 0:
            continue
        if _measured(model, example_inputs, {**ratios, name: 0.0}, kept, options) <= goal:
            ratios[name] = 0.0  # the whole space fits back
        else:
            ratios[name] = _bisect(model, example_inputs, ratios, name, 0.0, kept, goal, options, rounds=10)


def _finish(model, example_inputs, evaluate, kept, ratios, path, options):
    dense = copy.deepcopy(model)
    result = apply_ratios(model, example_inputs, ratios, **options)
    return ChannelSearchResult(ratios, kept(dense, model), evaluate(model), result.removed, path)


def search_channels_floor(model, example_inputs, evaluate, floor, *, cost="macs", curves=None,
                          grid=GRID, repeats=20, threads=1, **options) -> ChannelSearchResult:
    """The cheapest allocation along the greedy path whose measured evaluate() stays at or
    above `floor` x the dense value (bisection over the path, each probe measured on a copy);
    applied to `model` in place."""
    _check(cost, floor, "floor", low_open=False)
    kept = cost_meter(cost, example_inputs, repeats=repeats, threads=threads)
    curves = curves or channel_curves(model, example_inputs, evaluate, kept, grid=grid, **options)
    path, names = _greedy_path(curves, grid), [n for n in curves if n != "dense"]

    def measure(taken):
        trial = copy.deepcopy(model)
        apply_ratios(trial, example_inputs, _allocation(path, names, taken), **options)
        return evaluate(trial)
    best, _ = last_above(len(path), measure, floor * curves["dense"])
    return _finish(model, example_inputs, evaluate, kept, _allocation(path, names, best), path[:best], options)


def uniform_ratio(model, example_inputs, target, *, cost="macs", repeats=20, threads=1, rounds=10,
                  **options) -> float:
    """The one ratio for every space that removes `target` of the cost (bisection, measured
    on copies): the uniform baseline a search is compared with."""
    _check(cost, target, "target")
    kept = cost_meter(cost, example_inputs, repeats=repeats, threads=threads)
    names = channel_spaces(model, example_inputs, ignore=options.get("ignore"))
    low, high = 0.0, GRID[-1]
    if _measured(model, example_inputs, dict.fromkeys(names, high), kept, options) > 1 - target:
        raise PruneError(f"a {cost} target of {target} is out of reach at a uniform ratio of {high}")
    return smallest_meeting(low, high, lambda r: _measured(model, example_inputs, dict.fromkeys(names, r), kept,
                                                           options) <= 1 - target, rounds)
