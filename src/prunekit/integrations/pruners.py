"""One way to make the pruner a training loop calls, for every loop: your own (call
`step(x, y)` after each optimizer step and `finish()` at the end), the Hugging Face Trainer
and PyTorch Lightning (their callbacks call them for you).

Methods: "gradual" (magnitude, cubic schedule; Zhu & Gupta 2017), "structured-gradual"
(channels zeroed on a schedule, removed by finish(); soft filter pruning), "rigl" and "set"
(dynamic sparsity at a fixed level: the model is pruned to it at once, then weights move).
The schedule is laid over the run's optimizer steps: pruning from `begin` to `end` (fractions
of all steps), then training at the final sparsity."""
import inspect

from prunekit._utils.validate import check_count, check_range
from prunekit.errors import PruneError
from prunekit.training import DynamicSparsity, GradualPruner, Schedule, SoftChannelPruner
from prunekit.unstructured.magnitude import prune_magnitude

METHODS = ("gradual", "structured-gradual", "rigl", "set")


def check_method(method: str, sparsity: float) -> None:
    if method not in METHODS:
        raise PruneError(f"unknown pruning method {method!r} for a training loop: choose from {', '.join(METHODS)}")
    check_range("sparsity", sparsity, 0, 1, "()")


def install_masks(model, method: str, sparsity: float, **options) -> None:
    """The masks `method` trains with, before its first step: for "gradual" every prunable
    weight masked with all kept (the model has the same tensors from the first step to the
    last, so a checkpoint resumes and DDP sees them all); for "rigl" and "set" the fixed
    sparsity at once. "structured-gradual" has none (it zeroes channels as it goes)."""
    if method == "gradual":
        prune_magnitude(model, threshold=0.0, **options)
    elif method in ("rigl", "set"):
        prune_magnitude(model, sparsity, **options)


class Pruner:
    """What a loop drives: `step(x, y)` after each optimizer step, `finish()` after the last.
    With `masks_ready`, install_masks has already run (a Trainer checkpoint may since have
    loaded masks into the model): they are used as they are."""

    def __init__(self, model, method: str, sparsity: float, total_steps: int, *, example_inputs=None,
                 begin: float = 0.0, end: float = 0.75, every: int | None = None, loss_fn=None,
                 masks_ready: bool = False, **options):
        check_method(method, sparsity)
        check_count("total_steps", total_steps, 1)
        check_range("begin", begin, 0, 1, "[)")
        check_range("end", end, begin, 1, "(]")
        first, last = int(begin * total_steps), max(int(begin * total_steps) + 1, int(end * total_steps))
        every = every or max(1, (last - first) // 20)
        self.model, self.method = model, method
        if not masks_ready:
            install_masks(model, method, sparsity, **options)
        if method == "gradual":
            self.inner = GradualPruner(model, Schedule(sparsity, end=last, begin=first, every=every), **options)
        elif method == "structured-gradual":
            if example_inputs is None:
                raise PruneError("structured-gradual needs example_inputs (one batch) to trace the model's channels")
            self.inner = SoftChannelPruner(model, example_inputs, Schedule(sparsity, end=last, begin=first, every=every),
                                           **options)
        else:
            extra = {} if loss_fn is None else {"loss_fn": loss_fn}
            self.inner = DynamicSparsity(model, mode=method, every=every, end=last, **extra)

    @property
    def changes(self) -> int:
        """How many times the masks were updated so far."""
        return len(getattr(self.inner, "history", None) or getattr(self.inner, "updates", None) or [])

    def resume(self, step: int) -> None:
        """Continue the schedule from optimizer step `step` (after loading a checkpoint)."""
        self.inner.t = step

    @property
    def needs_batch(self) -> bool:
        """Whether step() needs the batch (RigL's dense gradients); others take step() alone."""
        return self.method == "rigl"

    def step(self, x=None, y=None) -> None:
        self.inner.step(x, y)

    def finish(self):
        """Remove zeroed channels (structured-gradual; returns the StructuredResult); else None."""
        return self.inner.finish() if self.method == "structured-gradual" else None


def mask_options(options: dict) -> dict:
    """Of a Pruner's keyword options, the ones it hands to install_masks (the rest, begin, end,
    every, loss_fn, example_inputs, are its own)."""
    own = {name for name, p in inspect.signature(Pruner).parameters.items() if p.kind is p.KEYWORD_ONLY}
    return {k: v for k, v in options.items() if k not in own}
