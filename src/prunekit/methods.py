"""Pruning methods by name, as `prunekit compare --methods` uses them.

Each method takes (model, example_inputs, target_sparsity, seed, context=None) and prunes
the model in place to that fraction of zero/removed prunable weights, returning the (possibly
new) model. Methods that train (gradual, iterative, dynamic, lottery) are in
`methods_training` and need the context (data, budgets, initial weights).
"""
import copy
import re


from .errors import PruneError
from .allocate import prune_allocated
from .magnitude import prune_magnitude, prune_rest
from .masks import prunable_count
from .nm import prune_nm
from .structured import prune_structured

METHODS: dict = {}
TRAINS: set = set()  # methods that train as they prune: they spend the fine-tuning budget themselves
_NM = re.compile(r"nm-(\d+):(\d+)")


def register(name: str, trains: bool = False):
    def wrap(fn):
        METHODS[name] = fn
        if trains:
            TRAINS.add(name)
        return fn
    return wrap


def get(name: str):
    """The method registered as `name`; "nm-N:M" for any N < M."""
    match = _NM.fullmatch(name)
    if match:
        n, m = int(match[1]), int(match[2])
        if not 0 < n < m:
            raise PruneError(f"{name!r}: N:M needs 0 < N < M")
        return lambda model, example, sparsity, seed, context=None: _nm(model, n, m)
    if name not in METHODS:
        raise PruneError(f"unknown method {name!r}: choose from {', '.join(METHODS)} or nm-N:M (e.g. nm-2:4)")
    return METHODS[name]


def fixed_sparsity(name: str):
    """The sparsity a method always reaches whatever the target (N:M: 1 - N/M), or None."""
    match = _NM.fullmatch(name)
    return 1 - int(match[1]) / int(match[2]) if match else None


def _nm(model, n, m):
    prune_nm(model, n, m)
    return model


@register("magnitude-global")
def magnitude_global(model, example_inputs, sparsity, seed, context=None):
    prune_magnitude(model, sparsity, scope="global", seed=seed)
    return model


@register("magnitude-layer")
def magnitude_layer(model, example_inputs, sparsity, seed, context=None):
    prune_magnitude(model, sparsity, scope="layer", seed=seed)
    return model


def channel_ratio_for(model, example_inputs, sparsity, steps=14):
    """The channel ratio whose structured pruning removes `sparsity` of the prunable weights.

    Output layers are never pruned, so the reachable sparsity has a ceiling; bisection finds
    the closest ratio (on copies: the model is not touched).
    """
    dense = prunable_count(model)
    low, high = 0.0, 0.999

    def removed(ratio):
        trial = prune_structured(copy.deepcopy(model), example_inputs, ratio=ratio).model
        return 1 - prunable_count(trial) / dense

    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if removed(middle) < sparsity else (low, middle)
    return high


@register("structured")
def structured(model, example_inputs, sparsity, seed, context=None):
    ratio = channel_ratio_for(model, example_inputs, sparsity)
    return prune_structured(model, example_inputs, ratio=ratio).model


@register("hybrid")
def hybrid(model, example_inputs, sparsity, seed, context=None):
    """Half the compression (in log terms) from removing channels, the rest from magnitude
    pruning what is left: a smaller dense model that also stores sparse."""
    dense = prunable_count(model)
    structured_share = 1 - (1 - sparsity) ** 0.5
    ratio = channel_ratio_for(model, example_inputs, structured_share)
    prune_structured(model, example_inputs, ratio=ratio)
    prune_rest(model, sparsity, dense, seed)
    return model


@register("lamp")
def lamp(model, example_inputs, sparsity, seed, context=None):
    """Magnitude pruning with LAMP's layer-adaptive global threshold."""
    prune_allocated(model, sparsity, "lamp")
    return model


@register("erk")
def erk(model, example_inputs, sparsity, seed, context=None):
    """Magnitude pruning of each layer to its Erdos-Renyi-Kernel share."""
    prune_allocated(model, sparsity, "erk")
    return model


from . import methods_training  # noqa: E402,F401  (registers the methods that train)
