"""The greedy and the bisections both searches share (layerwise: per-layer sparsities;
channels: per-space channel ratios).

`greedy` spends a budget from no pruning, one move at a time: the move that loses the least
metric per unit of cost saved. What a move is stays with each search (a layer's next grid
sparsity, read off its curve; a space's any later grid ratio, or a step measured on a copy);
`cheapest` and the loop are here. `last_above` bisects along such a path for the longest
prefix whose measured metric keeps a floor; `smallest_meeting` bisects one amount down to
what just meets a cost.

One grid per kind of quantity, because they differ:
- SPARSITY_GRID, fractions of a layer's weights masked: fine steps near 1, where accuracy
  falls steeply and where masking still pays (0.99 of a wide layer's weights can go);
- CHANNEL_GRID, fractions of a space's channels removed: eighths, which are whole channel
  counts for the usual widths (multiples of 8), and no further than 7/8: a layer cut to a
  few channels is a different architecture, not a pruned one.
"""
import math

SPARSITY_GRID = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
CHANNEL_GRID = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)


def cheapest(moves):
    """(name, value) of the move, among (name, value, loss, saving), that loses the least per
    unit saved. A move that saves nothing (a layer with no MACs, a step that removes no
    channel) is never taken; nor is one whose rate is not a number (a metric gone NaN);
    ties go to the first move offered."""
    best, best_rate = None, math.inf
    for name, value, loss, saving in moves:
        if saving <= 0:
            continue
        rate = loss / saving
        if rate < best_rate:
            best, best_rate = (name, value), rate
    return best


def greedy(state, moves, done=None) -> list:
    """The steps [(name, value)] taken from `state` {name: value} (updated in place): each the
    cheapest of moves(state), until done(state) or no move saves anything."""
    path = []
    while not (done and done(state)) and (step := cheapest(moves(state))) is not None:
        state[step[0]] = step[1]
        path.append(step)
    return path


def last_above(count, measure, floor):
    """(k, measure(k)) for the largest k in 1..count whose measure(k) >= floor, by bisection
    (the metric falls, mostly monotonically, as more of a path is taken); (0, None) if none."""
    low, high, best = 1, count, (0, None)
    while low <= high:
        middle = (low + high) // 2
        value = measure(middle)
        if value >= floor:
            best, low = (middle, value), middle + 1
        else:
            high = middle - 1
    return best


def smallest_meeting(low, high, meets, rounds):
    """The smallest x in (low, high] for which meets(x), to (high - low) / 2**rounds, by
    bisection; `high` is assumed to meet it."""
    for _ in range(rounds):
        middle = (low + high) / 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return high
