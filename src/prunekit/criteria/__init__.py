"""Importance criteria, registered by name. Higher score = more important = kept."""
from typing import Callable

import torch

from prunekit._utils.registry import Registry

# fn(weights, generator) -> scores of the same shape
ELEMENTWISE = Registry("criterion", hint=", or pass a callable weights -> scores")
# fn(graph, model, calibration, seed) -> one score per structured unit
CHANNEL = Registry("importance", hint=", or pass a callable (weight, dim) -> scores")


def register_elementwise(name: str):
    """Register `fn(weights, generator) -> scores` (same shape, float) under `name`."""
    return ELEMENTWISE.register(name)


def register_channel(name: str):
    """Register `fn(graph, model, calibration, seed) -> scores` (one per unit) under `name`."""
    return CHANNEL.register(name)


def get_elementwise(criterion) -> Callable:
    """A registered criterion name, or a user callable `fn(weights) -> scores` (same shape)."""
    if callable(criterion):
        return lambda weights, generator: criterion(weights)
    return ELEMENTWISE.get(criterion)


def get_channel(importance) -> Callable:
    """A registered structured criterion, or a user callable `fn(weight, dim) -> scores`
    (one per index along `dim` of each producing layer's weight, summed over a unit)."""
    if callable(importance):
        return _per_weight(importance)
    return CHANNEL.get(importance)


def _per_weight(fn):
    def criterion(graph, model, calibration=None, seed=None):
        producing = lambda s, module, tensor: s.role == "out" and s.tensor == "weight"  # noqa: E731
        score = lambda tensor, dim: torch.as_tensor(fn(tensor.detach(), dim)).double().numpy()  # noqa: E731
        return accumulate(graph, model, score, producing)[0]
    return criterion


from prunekit.criteria import calibrated as _calibrated  # noqa: E402,F401  (registers the built-ins)
from prunekit.criteria import elementwise as _elementwise  # noqa: E402,F401
from prunekit.criteria import group as _group  # noqa: E402,F401
from prunekit.criteria.group import accumulate, bn_l1_penalty  # noqa: E402,F401
