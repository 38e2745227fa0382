"""Importance criteria, registered by name. Higher score = more important = kept."""
from typing import Callable

from ..errors import PruneError

ELEMENTWISE: dict = {}  # fn(weights, generator) -> scores of the same shape
CHANNEL: dict = {}      # fn(weight, out_dim) -> one score per output channel


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
    """Register `fn(weight, out_dim) -> scores` (one per output channel) under `name`."""
    return _register(CHANNEL, name)


def get_elementwise(criterion) -> Callable:
    """A registered criterion name, or a user callable `fn(weights) -> scores` (same shape)."""
    if callable(criterion):
        return lambda weights, generator: criterion(weights)
    return _lookup(ELEMENTWISE, criterion, "criterion", "weights -> scores")


def get_channel(importance) -> Callable:
    """A registered channel criterion name, or a user callable `fn(weight, out_dim) -> scores`."""
    if callable(importance):
        return importance
    return _lookup(CHANNEL, importance, "importance", "(weight, out_dim) -> scores")


from . import channel as _channel  # noqa: E402,F401  (registers the built-ins)
from . import elementwise as _elementwise  # noqa: E402,F401
