"""Importance criteria, registered by name. Higher score = more important = kept."""
from typing import Callable

from ..errors import PruneError

ELEMENTWISE: dict = {}


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


from . import elementwise as _elementwise  # noqa: E402,F401  (registers the built-ins)
