"""Lottery tickets (Frankle & Carbin 2019; rewinding: Frankle et al. 2020).

Iterative magnitude pruning: train, prune `rate` of the weights still alive in each layer,
set the survivors back to their initial values (or to their values after `rewind` training
steps), train again, ... The controls keep what a ticket is tested against: the same masks
with a fresh random initialisation, and random masks of the same per-layer sparsity.

`train(model, on_step)` is the caller's training run; it must call `on_step(x, y)` after each
optimizer step (prunekit.train.fit(..., on_step=on_step) does) and returns the figure to
report for the round (validation accuracy, say).
"""
import re

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit import masks
from prunekit._utils.seeding import seeded
from prunekit._utils.validate import check_count, check_range
from prunekit.errors import PruneError
from prunekit.targets import prunable_modules, select_modules, stored_weight
from prunekit.unstructured.magnitude import prune_magnitude

# A masked tensor's state names; no leading "." when the model itself is the masked layer.
_RAW = re.compile(r"(^|\.)parametrizations\.(\w+)\.original$")
_MASK = re.compile(r"(^|\.)parametrizations\.\w+\.\d+\.mask$")


def snapshot(model) -> dict:
    """Every parameter and buffer by its plain name (a masked `x.weight` too), masks left out."""
    return {_RAW.sub(r"\1\2", name): value.detach().clone()
            for name, value in model.state_dict().items() if not _MASK.search(name)}


@torch.no_grad()
def rewind(model, state: dict) -> None:
    """Set every parameter and buffer to `state`; masked entries stay zero."""
    for name, value in model.state_dict().items():
        plain = _RAW.sub(r"\1\2", name)
        if plain in state and not _MASK.search(name):
            value.copy_(state[plain])
    for _, module, tensor_name in masks.masked_modules(model):
        masks.raw_tensor(module, tensor_name).masked_fill_(~masks.get_mask(module, tensor_name), 0)


class _Recorder:
    """on_step that keeps the model's state after `at` optimizer steps."""

    def __init__(self, model, at):
        self.model, self.at, self.t, self.state = model, at, 0, None

    def __call__(self, x=None, y=None):
        self.t += 1
        if self.t == self.at:
            self.state = snapshot(self.model)


def prunable(model, include=None, exclude=None) -> list:
    """[(name, module)] of the selected layers, one per stored weight: a weight shared by
    several layers is pruned and counted once (its other layers get the same mask)."""
    seen, found = set(), []
    for name, module in select_modules(model, include, exclude):
        if id(stored_weight(module)) not in seen:
            seen.add(id(stored_weight(module)))
            found.append((name, module))
    return found


def find_ticket(model, train, *, rounds, rate=0.2, rewind_to=0, initial=None, overrides=None,
                include=None, exclude=None) -> list:
    """Run `rounds` rounds of iterative magnitude pruning on `model` (in place; it ends as the
    last round's trained ticket). `rate`: fraction of the alive weights of each layer pruned
    per round; `overrides` {module regex: rate} (Frankle & Carbin prune the output layer at
    half the rate). `rewind_to`: 0 resets to the initial weights, k > 0 to the weights after
    k steps of the first training run. Returns one dict per round: the sparsity it was
    trained at and what `train` returned. With `initial` (a snapshot), `model` is taken as
    already trained from it: round 0 is not trained again and survivors reset to `initial`.
    """
    _validate(rounds, rate, rewind_to, initial)
    chosen = prunable(model, include, exclude)
    rates = {name: _rate_for(name, rate, overrides or {}) for name, _ in chosen}
    start = snapshot(model) if initial is None else initial
    recorder = _Recorder(model, rewind_to)
    history = []
    for round_ in range(rounds + 1):
        trained = round_ == 0 and initial is not None
        figure = None if trained else train(model, recorder if round_ == 0 and rewind_to else _no_op)
        history.append({"round": round_, "sparsity": masks_sparsity(model, chosen), "result": figure})
        if round_ == rounds:
            break
        _prune_round(model, chosen, rates)
        if rewind_to and recorder.state is None:
            raise PruneError(f"the first training run made fewer than rewind_to={rewind_to} steps")
        rewind(model, recorder.state if rewind_to else start)
    return history


def _validate(rounds, rate, rewind_to, initial):
    check_range("rate", rate, 0, 1, "()")
    check_count("rounds", rounds, 1)
    if initial is not None and rewind_to:
        raise PruneError("rewind_to needs the first training run: give a model at its initial weights, not initial=")


def _prune_round(model, chosen, rates):
    """Each layer loses its rate of the weights still alive (layer-wise magnitude); a layer
    sharing the weight of a chosen one gets its mask."""
    users = prunable_modules(model)
    for name, module in chosen:
        alive = _alive(module)
        prune_magnitude(module, 1 - alive * (1 - rates[name]) / masks.raw_tensor(module).numel(), scope="layer")
        for _, other in users:
            if other is not module and stored_weight(other) is stored_weight(module):
                masks.attach(other, masks.get_mask(module))  # the same buffer, not a copy


def _no_op(x=None, y=None):
    return None


def _rate_for(name, rate, overrides):
    for pattern, value in overrides.items():
        if re.fullmatch(pattern, name):
            return value
    return rate


def _alive(module) -> int:
    mask = masks.get_mask(module)
    return masks.raw_tensor(module).numel() if mask is None else int(mask.sum())


def masks_sparsity(model, chosen) -> float:
    total = sum(masks.raw_tensor(m).numel() for _, m in chosen)
    return 1 - sum(_alive(m) for _, m in chosen) / total


@torch.no_grad()
def reinitialize(model, seed: int) -> None:
    """Control: same masks, fresh random weights from each module's own reset_parameters
    (which draw from the global RNG: seeded here, the caller's state restored after)."""
    with seeded(seed):
        for module in model.modules():
            if isinstance(module, parametrize.ParametrizationList) or not hasattr(module, "reset_parameters"):
                continue
            if not parametrize.is_parametrized(module):
                module.reset_parameters()
                continue
            for name, value in _fresh_values(module).items():
                masks.raw_tensor(module, name).copy_(value)
    for _, module, tensor_name in masks.masked_modules(model):
        masks.raw_tensor(module, tensor_name).masked_fill_(~masks.get_mask(module, tensor_name), 0)


def _fresh_values(module) -> dict:
    """reset_parameters run on an unmasked stand-in of `module` (its plain class, its
    settings): a masked module's own initialisation, its parametrization left untouched
    (removing a parametrization from a copy would change the class the original shares)."""
    plain = type(module).__bases__[0]
    stand_in = plain.__new__(plain)
    stand_in.__dict__.update(module.__dict__)
    names = list(module._parameters) + list(module.parametrizations)
    stand_in._parameters = {n: nn.Parameter(torch.empty_like(masks.raw_tensor(module, n))) for n in names
                            if masks.raw_tensor(module, n) is not None}
    stand_in._modules = {}
    stand_in.reset_parameters()
    return {n: p.detach() for n, p in stand_in._parameters.items()}


@torch.no_grad()
def random_masks(model, seed: int) -> None:
    """Control: every masked layer gets a random mask keeping as many weights as before.
    Call `rewind(model, initial_state)` after it: positions masked before hold zeros."""
    generator, seen = torch.Generator().manual_seed(seed), set()
    for _, module, tensor_name in masks.masked_modules(model):
        mask = masks.get_mask(module, tensor_name)
        if id(mask) in seen:  # one mask shared by the layers of a tied weight: drawn once
            continue
        seen.add(id(mask))
        kept = int(mask.sum())
        order = torch.randperm(mask.numel(), generator=generator)
        fresh = torch.zeros(mask.numel(), dtype=torch.bool)
        fresh[order[:kept]] = True
        mask.copy_(fresh.view_as(mask))
