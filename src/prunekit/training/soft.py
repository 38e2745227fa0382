"""Structured pruning over training: channels are zeroed while the model trains, and removed
for real at the end (`finish`).

mode "mask" (structured gradual pruning): the chosen channels are masked on their producing
side (the filter, its bias, the BatchNorm scale and shift that follow it), so their output
is exactly zero and stays so; the set only grows, following a Schedule. mode "zero" (soft
filter pruning, He et al. 2018): only the chosen filters and their biases are zeroed, and
they keep training, so a channel may recover; the choice is made afresh at every update.

`finish` zeroes the final choice on the whole producing side and removes exactly it: the pruned
model computes exactly what the model with those channels zeroed computes.
"""
import numpy as np
import torch
from torch import nn

from prunekit import masks
from prunekit._utils.inputs import as_inputs
from prunekit.criteria import get_channel
from prunekit.criteria.group import positions, units
from prunekit.errors import PruneError
from prunekit.graph import analyze
from prunekit.masks import raw_tensor
from prunekit.structured import Options, choose_layer, nothing_to_prune, prune_units
from prunekit.targets import resolve_ignore
from prunekit.training.schedules import Schedule

MODES = ("mask", "zero")


class SoftChannelPruner:
    """Call `step()` after each optimizer step; `finish()` removes the zeroed channels."""

    def __init__(self, model, example_inputs, schedule: Schedule, *, mode="mask", importance="l2",
                 ignore=None):
        if mode not in MODES:
            raise PruneError(f"soft pruning mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.model, self.schedule, self.mode, self.t = model, schedule, mode, 0
        self.inputs = as_inputs(example_inputs)
        self.graph = analyze(model, self.inputs, ignore=resolve_ignore(model, ignore))
        if not self.graph.spaces:
            raise nothing_to_prune(model, "channels")
        self.criterion = get_channel(importance)
        self.zeroed = set()
        self.history = []  # [(step, channels zeroed)]

    def step(self, x=None, y=None) -> None:
        self.t += 1
        if self.schedule.due(self.t) and self.schedule.sparsity_at(self.t) > 0:
            self._update(self.schedule.sparsity_at(self.t))

    @property
    def done(self) -> bool:
        """Whether the schedule has reached its final ratio (for fit(keep_best=lambda: pruner.done))."""
        return self.t >= self.schedule.end

    def _update(self, ratio):
        order = units(self.graph)
        scores = self.criterion(self.graph, self.model, None, None)
        if self.mode == "mask":  # masked channels stay chosen: rank them first
            scores = np.where(np.isin(order, list(self.zeroed)), -np.inf, scores)
        score_of = dict(zip(order.tolist(), scores))
        chosen = choose_layer(self.graph, score_of, {}, 1.0, Options(ratio, 1, 1.0, {}))
        self.zeroed = set(chosen) if self.mode == "zero" else self.zeroed | set(chosen)
        masked = self.mode == "mask"
        _zero_units(self.model, self.graph, order, self.zeroed, masked, ("out", "follow") if masked else ("out",))
        self.history.append((self.t, len(self.zeroed)))

    def finish(self):
        """Remove the zeroed channels (and make the masks permanent). Returns StructuredResult."""
        self._update(self.schedule.final)
        _zero_units(self.model, self.graph, units(self.graph), self.zeroed, False, ("out", "follow"))
        masks.make_permanent(self.model)
        # exactly the zeroed units: choosing again by score could take a channel that died
        # by itself (its score ties with the zeroed ones) and keep a zeroed one
        return prune_units(self.model, self.inputs, self.graph, self.zeroed)


@torch.no_grad()
def _zero_units(model, graph, order, chosen, masked, roles):
    """Zero (or mask) the chosen units' slices of the given roles ("out": the producing
    layer's filters and bias; "follow": BatchNorm and other per-channel parameters)."""
    chosen = np.array(sorted(chosen), dtype=order.dtype)
    for s in graph.slices:
        if s.role not in roles:
            continue
        module = model.get_submodule(s.module)
        tensor = raw_tensor(module, s.tensor)
        if not isinstance(tensor, nn.Parameter):
            continue
        entries, where = positions(graph, order, s.labels)
        hit = torch.as_tensor(entries[np.isin(order[where], chosen)], dtype=torch.long)
        if not len(hit):
            continue
        keep = torch.ones(tensor.shape[s.dim], dtype=torch.bool)
        keep[hit] = False
        shape = [1] * tensor.dim()
        shape[s.dim] = -1
        keep = keep.view(shape).expand_as(tensor)
        if masked:
            masks.attach(module, keep.clone(), s.tensor)
        else:
            tensor.masked_fill_(~keep, 0)
