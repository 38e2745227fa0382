"""Importance criteria, registered by name. Higher score = more important = kept."""
from typing import Callable

from ..errors import PruneError

ELEMENTWISE: dict = {}
CHANNEL: dict = {}


def register_elementwise(name: str):
    """Register `fn(weights, generator) -> scores` (same shape, float) under `name`."""
    def wrap(fn: Callable) -> Callable:
        ELEMENTWISE[name] = fn
        return fn
    return wrap


def get_elementwise(criterion) -> Callable:
    """A registered criterion name, or a user callable `fn(weights) -> scores` (same shape)."""
    if callable(criterion):
        return lambda weights, generator: criterion(weights)
    if criterion not in ELEMENTWISE:
        raise PruneError(f"unknown criterion {criterion!r}: choose one of {', '.join(sorted(ELEMENTWISE))} "
                         "or pass a callable weights -> scores")
    return ELEMENTWISE[criterion]


def register_channel(name: str):
    """Register `fn(weight, out_dim) -> scores` (one per output channel) under `name`."""
    def wrap(fn: Callable) -> Callable:
        CHANNEL[name] = fn
        return fn
    return wrap


def get_channel(importance) -> Callable:
    """A registered channel criterion name, or a user callable `fn(weight, out_dim) -> scores`."""
    if callable(importance):
        return importance
    if importance not in CHANNEL:
        raise PruneError(f"unknown importance {importance!r}: choose one of {', '.join(sorted(CHANNEL))} "
                         "or pass a callable (weight, out_dim) -> scores")
    return CHANNEL[importance]


from . import channel as _channel  # noqa: E402,F401  (registers the built-ins)
from . import elementwise as _elementwise  # noqa: E402,F401  (registers the built-ins)
