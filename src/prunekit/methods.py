"""Pruning methods by name, as `prunekit compare --methods` uses them.

Each method takes (model, example_inputs, target_sparsity, seed) and prunes the model in
place to that fraction of zero/removed prunable weights, returning the (possibly new) model.
"""
import copy

from torch import nn

from .errors import PruneError
from .magnitude import prune_magnitude
from .masks import PRUNABLE_TYPES
from .structured import prune_structured

METHODS: dict = {}


def register(name: str):
    def wrap(fn):
        METHODS[name] = fn
        return fn
    return wrap


def get(name: str):
    if name not in METHODS:
        raise PruneError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name]


def prunable_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, PRUNABLE_TYPES))


@register("magnitude-global")
def magnitude_global(model, example_inputs, sparsity, seed):
    prune_magnitude(model, sparsity, scope="global", seed=seed)
    return model


@register("magnitude-layer")
def magnitude_layer(model, example_inputs, sparsity, seed):
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
def structured(model, example_inputs, sparsity, seed):
    ratio = channel_ratio_for(model, example_inputs, sparsity)
    return prune_structured(model, example_inputs, ratio=ratio).model


@register("hybrid")
def hybrid(model, example_inputs, sparsity, seed):
    """Half the compression (in log terms) from removing channels, the rest from magnitude
    pruning what is left: a smaller dense model that also stores sparse."""
    dense = prunable_count(model)
    structured_share = 1 - (1 - sparsity) ** 0.5
    ratio = channel_ratio_for(model, example_inputs, structured_share)
    prune_structured(model, example_inputs, ratio=ratio)
    remaining = prunable_count(model)
    target_nonzero = (1 - sparsity) * dense
    if remaining > target_nonzero:
        prune_magnitude(model, 1 - target_nonzero / remaining, scope="global", seed=seed)
    return model
