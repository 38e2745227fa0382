"""The registry of compare's methods, by name.

Each method takes (model, example_inputs, target_sparsity, seed, context=None) and prunes
the model in place to that fraction of zero/removed prunable weights, returning the (possibly
new) model. Methods registered with trains=True train as they prune and spend the
fine-tuning budget themselves; they need the context (data, budgets, initial weights).
"""
import re

from prunekit._utils.registry import Registry
from prunekit.errors import PruneError
from prunekit.unstructured.nm import prune_nm

METHODS = Registry("method", hint=", or nm-N:M (e.g. nm-2:4)")
_NM = re.compile(r"nm-(\d+):(\d+)")


def register(name: str, trains: bool = False):
    return METHODS.register(name, trains=trains)


def get(name: str):
    """The method registered as `name`; "nm-N:M" for any N < M."""
    match = _NM.fullmatch(name)
    if match:
        n, m = int(match[1]), int(match[2])
        if not 0 < n < m:
            raise PruneError(f"{name!r}: N:M needs 0 < N < M")
        return lambda model, example, sparsity, seed, context=None: _nm(model, n, m)
    return METHODS.get(name)


def list_methods() -> list:
    return METHODS.names()


def trains(name: str) -> bool:
    """Whether the method trains as it prunes (it then gets no separate fine-tuning)."""
    return name in METHODS.tagged("trains")


def fixed_sparsity(name: str):
    """The sparsity a method always reaches whatever the target (N:M: 1 - N/M), or None."""
    match = _NM.fullmatch(name)
    return 1 - int(match[1]) / int(match[2]) if match else None


def _nm(model, n, m):
    prune_nm(model, n, m)
    return model
