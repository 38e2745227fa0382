"""Structured pruning: pk.prune_structured removes whole channels/filters/neurons."""
import logging
import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from . import surgery
from .criteria import get_channel
from .errors import PruneError
from .graph import find_groups

log = logging.getLogger(__name__)


@dataclass
class StructuredResult:
    model: nn.Module
    removed: dict = field(default_factory=dict)  # name -> {"out": [...], "in": [...]} original indexing
    params_before: int = 0
    params_after: int = 0


def _inputs(example_inputs):
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs)
    raise PruneError("example_inputs must be a tensor or a tuple of tensors for one forward call")


def _ignored(model, ignore):
    """Names of modules in `ignore` (module objects, exact names or regexes)."""
    if ignore is None:
        return set()
    items = ignore if isinstance(ignore, (list, tuple, set)) else [ignore]
    names = set()
    for name, module in model.named_modules():
        for item in items:
            if module is item or (isinstance(item, str) and (name == item or re.fullmatch(item, name))):
                names.add(name)
    return names


def _n_keep(channels, ratio, round_to):
    keep = channels - math.floor(channels * ratio)
    if round_to > 1:
        keep = max(round_to, round_to * round(keep / round_to))
    return max(1, min(channels, keep))


def _validate(ratio, granularity, scope, round_to):
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0 <= ratio < 1:
        raise PruneError(f"ratio must be a number in [0, 1), got {ratio!r}")
    if granularity != "channel":
        raise PruneError(f"granularity {granularity!r} is not available yet; use 'channel'")
    if scope != "layer":
        raise PruneError(f"structured scope {scope!r} is not available yet; use 'layer'")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise PruneError(f"round_to must be a positive int, got {round_to!r}")


def _plan(model, groups, ratio, round_to, score_fn):
    """{producer: sorted kept indices}, decided before anything changes."""
    modules = dict(model.named_modules())
    plan = {}
    for group in groups:
        for member in group.members:
            surgery.handler_for(modules[member.name], member.name)  # fail before any change
        weight = modules[group.producer].weight
        out_dim = 1 if isinstance(modules[group.producer], nn.modules.conv._ConvTransposeNd) else 0
        scores = score_fn(weight, out_dim)
        n_keep = _n_keep(group.channels, ratio, round_to)
        # Stable descending sort: equal scores keep the lower index (deterministic).
        order = torch.sort(scores, descending=True, stable=True).indices
        plan[group.producer] = torch.sort(order[:n_keep]).values
    return plan


def _apply(model, groups, plan, removed):
    modules = dict(model.named_modules())
    for group in groups:
        keep = plan[group.producer]
        dropped = sorted(set(range(group.channels)) - set(keep.tolist()))
        if not dropped:
            continue
        for member in group.members:
            if member.repeat > 1:  # channel c is features c*repeat ... c*repeat + repeat - 1
                index = (keep[:, None] * member.repeat + torch.arange(member.repeat)).reshape(-1)
                gone = [c * member.repeat + j for c in dropped for j in range(member.repeat)]
            else:
                index, gone = keep, dropped
            surgery.apply(modules[member.name], member.dim, index, member.name)
            removed.setdefault(member.name, {"out": [], "in": []})[member.dim].extend(gone)


def prune_structured(model, example_inputs, *, ratio, granularity="channel", importance="l2",
                     scope="layer", ignore=None, round_to=1, calibration=None) -> StructuredResult:
    """Remove `ratio` of the output channels of every prunable layer (in place; returned).

    Coupled layers (BatchNorm, the next layer's inputs, flattened features) are sliced with
    them. Output layers, whose channels are the model's outputs, are never pruned.
    """
    _validate(ratio, granularity, scope, round_to)
    inputs = _inputs(example_inputs)
    score_fn = get_channel(importance)
    params_before = sum(p.numel() for p in model.parameters())
    groups = find_groups(model, inputs, ignore=_ignored(model, ignore))
    if not groups:
        raise PruneError(f"{type(model).__name__} has no prunable channels: every layer feeds the output "
                         "or is ignored")
    plan = _plan(model, groups, ratio, round_to, score_fn)
    removed = {}
    _apply(model, groups, plan, removed)
    result = StructuredResult(model, removed, params_before, sum(p.numel() for p in model.parameters()))
    log.debug("structured pruning: %d -> %d parameters", result.params_before, result.params_after)
    return result
