"""Checking a pruning plan: run the pruned model to the end and compare every traced call's channel
dims with the prediction; keep the channels of a call that disagrees or is blamed for a failure."""
import logging

import torch
from torch import nn

from prunekit._utils.inputs import tensors_of
from prunekit._utils.modes import eval_mode
from prunekit.graph import rules
from prunekit.graph.run import attributes_kept, meta_call, watch
from prunekit.graph.spaces import spaces

log = logging.getLogger(__name__)


def _matches(graph, event, shapes, removed) -> bool:
    """Same rank as traced, and every dim that carries channels has the predicted size.
    Other dims may differ: after a value-dependent op (NMS) their sizes follow the data."""
    if len(shapes) != len(event.shapes):
        return False
    for traced, actual, labels in zip(event.shapes, shapes, event.labels):
        if len(traced) != len(actual):
            return False
        if labels is None:
            continue
        for dim in range(labels.ndim):
            if labels.shape[dim] > 1 and actual[dim] != int(graph.keep(labels.reshape(-1), removed).sum()):
                return False
    return True


def check(model: nn.Module, example_inputs, graph, removed, plan=None):
    """The first traced call whose output shape on the pruned model differs from the
    prediction (a reshape with a fixed size, a slice with fixed bounds), or None.

    With `plan` (surgery.Cuts, not yet applied) the pruned model is run on the meta device
    with the planned shapes and attributes: no weight is touched.

    After the first value-dependent op (NMS, topk, nonzero) the calls and their sizes
    follow the data, which pruning changes: from there on only a failure counts, and it is
    blamed on that op.

    The forward runs to its end: a failure after the last traced call (a size checked in
    Python, a fixed size outside torch) is blamed on the last call that touched a removed
    channel, so repairs walk back from the end until the model runs.
    """
    seen, failed = [], False
    removed = graph.removal(removed)
    horizon = next((i for i, e in enumerate(graph.events) if e.op in rules.VALUE_DEPENDENT), len(graph.events))

    def on_op(func, name, args, kwargs, out):
        if tensors_of(out):  # as Context.record: calls with no tensor out are not events
            seen.append((name, [tuple(t.shape) for t in tensors_of(out)]))

    def on_leaf(name, module, args, kwargs, output):
        seen.append((type(module).__name__, [tuple(t.shape) for t in tensors_of(output)]))

    try:
        call = meta_call(model, example_inputs, plan and plan.tensors)[1] if graph.meta \
            else lambda: model(*example_inputs)
        with attributes_kept(model), eval_mode(model), torch.no_grad(), \
                watch(model, graph.ignored, on_op, on_leaf, graph.meta):
            for (module, attr), value in (plan.attrs.items() if plan else ()):
                setattr(model.get_submodule(module), attr, value)  # undone by _attributes_kept
            call()
    except Exception as exc:  # noqa: BLE001  the pruned model fails: blame the first unchecked event
        log.debug("the pruned model fails: %s: %s", type(exc).__name__, exc)
        failed = True
    for i, event in enumerate(graph.events[:horizon]):
        if i >= len(seen) or seen[i][0] != event.op or not _matches(graph, event, seen[i][1], removed):
            log.debug("call %d (%s in %s) differs from the prediction: ran %s", i, event.op, event.module,
                      seen[i] if i < len(seen) else "nothing")
            return event
    if not failed:
        return None
    return graph.events[horizon] if horizon < len(graph.events) else _last_touching(graph, removed)


def _last_touching(graph, removal):
    """The last traced call whose inputs or outputs hold a channel that `removal` takes away
    (the last call at all if none does: something must be blamed)."""
    for event in reversed(graph.events):
        if len(event.atoms) and not graph.keep(event.atoms, removal).all():
            return event
    return graph.events[-1] if graph.events else None


def pin_event(graph, model, event, widen: int = 0) -> None:
    """Keep every channel an event touches, in every module of the same class (the same
    reshape sits in each of a model's attention layers), then regroup the units left.

    With `widen` = k > 0, keep every channel touched anywhere inside the module k levels
    above the event's, and inside each module of that class (a size may come from another
    tensor of the same module).
    """
    if widen == 0:
        for other in graph.events:
            if other.slot == event.slot:
                graph.uf.pin(other.atoms)
    else:
        parts = event.module.split(".") if event.module else []
        scope = ".".join(parts[: max(0, len(parts) - widen + 1)])
        kind = type(model.get_submodule(scope)) if scope else None
        scopes = [n for n, m in model.named_modules() if type(m) is kind] if scope else [""]
        for other in graph.events:
            if any(not s or other.module == s or other.module.startswith(s + ".") for s in scopes):
                graph.uf.pin(other.atoms)
    graph.spaces = spaces(graph.uf, graph.slices, graph.candidates)
