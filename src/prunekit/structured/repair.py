"""Cut the chosen units, then check the pruned model against the prediction; where an op
with a fixed size disagrees, keep its channels and choose again."""
import logging

from torch.nn.utils import parametrize

from prunekit import surgery
from prunekit.errors import PruneError
from prunekit.structured.verify import check, pin_event

log = logging.getLogger(__name__)

_MAX_REPAIRS = 200


def apply_checked(model, inputs, graph, choose, kept_fixed):
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
    """Apply `plan`; None if the pruned model runs to the end with the predicted shapes,
    else the op blamed (the model is then restored). The check runs even where no op with
    a size touched channels: any code after the last traced call may still fail. On the
    meta device the plan is checked before any weight is sliced."""
    masked = any(parametrize.is_parametrized(model.get_submodule(m), t) for m, t in plan.tensors)
    checked_first = graph.meta and not masked
    if checked_first:
        bad = check(model, inputs, graph, removed, plan)
        if bad is not None:
            return bad
    snapshot = surgery.Snapshot(surgery.touched(model, plan))
    try:
        surgery.apply(model, plan)
        bad = None if checked_first else check(model, inputs, graph, removed)
    except BaseException:
        snapshot.restore()
        raise
    if bad is not None:
        snapshot.restore()
    return bad
