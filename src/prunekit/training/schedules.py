"""Sparsity schedules, and the pruner a training loop calls once per step.

A schedule is a pure function of the step: `Schedule(...).sparsity_at(step)`. Pruning happens
at `begin`, `begin + every`, ... up to `end`; before `begin` the sparsity is `initial`, after
`end` it is `final`. "cubic" is Zhu & Gupta (2017):

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3,   t0 = begin, n * dt = end - begin

which prunes fast while many weights are redundant and slowly near the target.
"""
import math
from dataclasses import dataclass

from prunekit._utils.validate import check_count, check_range
from prunekit.errors import PruneError
from prunekit.unstructured.magnitude import prune_magnitude

KINDS = ("constant", "linear", "cubic")


@dataclass(frozen=True)
class Schedule:
    final: float
    end: int = 0
    begin: int = 0
    initial: float = 0.0
    every: int = 1
    kind: str = "cubic"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PruneError(f"schedule kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("initial", "final"):
            check_range(f"schedule {name} sparsity", getattr(self, name), 0, 1, "[)")
        check_count("schedule every", self.every, 1)
        if not (isinstance(self.begin, int) and isinstance(self.end, int) and 0 <= self.begin <= self.end):
            raise PruneError(f"schedule needs 0 <= begin <= end (ints), got begin={self.begin!r}, end={self.end!r}")

    def sparsity_at(self, step: int) -> float:
        """Target sparsity at `step` (a pure function: no state)."""
        if step < self.begin:
            return self.initial if self.kind != "constant" else 0.0
        if self.kind == "constant" or step >= self.end:
            return self.final
        progress = (step - self.begin) / (self.end - self.begin)
        if self.kind == "linear":
            return self.initial + (self.final - self.initial) * progress
        return self.final + (self.initial - self.final) * (1 - progress) ** 3

    def due(self, step: int) -> bool:
        """Whether the masks are updated at `step`: begin, begin + every, ..., and end."""
        if self.kind == "constant":
            return step == self.begin
        return self.begin <= step <= self.end and ((step - self.begin) % self.every == 0 or step == self.end)


def steps_per_epoch(train_size: int, batch_size: int, limit: int = 0) -> int:
    return math.ceil((limit or train_size) / batch_size)


class GradualPruner:
    """Magnitude pruning that follows a schedule during training.

    Call `step()` once after each optimizer step (from prunekit's own loop, through
    `fit(..., on_step=pruner.step)`, or from your own). At each due step the masks are
    recomputed to `schedule.sparsity_at(step)`; masks only grow, so pruned weights stay
    pruned, and between updates the optimizer trains the weights that are left.
    """

    def __init__(self, model, schedule: Schedule, *, scope="global", criterion="l1",
                 include=None, exclude=None):
        self.model, self.schedule, self.t = model, schedule, 0
        self.options = dict(scope=scope, criterion=criterion, include=include, exclude=exclude)
        self.history = []  # [(step, sparsity reached)]
        self._prune(0)

    def _prune(self, step):
        if self.schedule.due(step) and self.schedule.sparsity_at(step) > 0:
            report = prune_magnitude(self.model, self.schedule.sparsity_at(step), **self.options)
            self.history.append((step, report.sparsity))

    def step(self, x=None, y=None) -> None:
        """One optimizer step done (x, y: the batch, unused here; taken so that every pruner is
        called alike)."""
        self.t += 1
        self._prune(self.t)

    @property
    def done(self) -> bool:
        """Whether the schedule has reached its final sparsity (no mask update is left)."""
        return self.t >= self.schedule.end
