"""Importance criteria, registered by name. Higher score = more important = kept."""
from typing import Callable

import torch

from ..errors import PruneError

ELEMENTWISE: dict = {}  # fn(weights, generator) -> scores of the same shape
CHANNEL: dict = {}      # fn(graph, model, calibration, seed) -> one score per structured unit


def _register(table: dict, name: str):
    def wrap(fn: Callable) -> Callable:
        table[name] = fn
        return fn
    return wrap


def _lookup(table: dict, name, what: str, signature: str) -> Callable:
    if name not in table:
        raise PruneError(f"unknown {what} {name!r}: choose one of {', '.join(sorted(table))} "
                         f"or pass a callable {signature}")
    return table[name]


def register_elementwise(name: str):
    """Register `fn(weights, generator) -> scores` (same shape, float) under `name`."""
    return _register(ELEMENTWISE, name)


def register_channel(name: str):
    """Register `fn(graph, model, calibration, seed) -> scores` (one per unit) under `name`."""
    return _register(CHANNEL, name)


def get_elementwise(criterion) -> Callable:
    """A registered criterion name, or a user callable `fn(weights) -> scores` (same shape)."""
    if callable(criterion):
        return lambda weights, generator: criterion(weights)
    return _lookup(ELEMENTWISE, criterion, "criterion", "weights -> scores")


def get_channel(importance) -> Callable:
    """A registered structured criterion, or a user callable `fn(weight, dim) -> scores`
    (one per index along `dim` of each producing layer's weight, summed over a unit)."""
    if callable(importance):
        return _per_weight(importance)
    return _lookup(CHANNEL, importance, "importance", "(weight, dim) -> scores")


def _per_weight(fn):
    def criterion(graph, model, calibration=None, seed=None):
        producing = lambda s, module, tensor: s.role == "out" and s.tensor == "weight"  # noqa: E731
        score = lambda tensor, dim: torch.as_tensor(fn(tensor.detach(), dim)).double().numpy()  # noqa: E731
        return accumulate(graph, model, score, producing)[0]
    return criterion


from . import calibrated as _calibrated  # noqa: E402,F401  (registers the built-ins)
from . import group as _group  # noqa: E402,F401
from .group import accumulate, bn_l1_penalty  # noqa: E402,F401
from . import elementwise as _elementwise  # noqa: E402,F401
