"""One-shot methods: prune once, no data needed (the fine-tuning comes after, from compare)."""
import copy

from prunekit.experiments.methods.registry import register
from prunekit.structured.prune import prune_structured
from prunekit.targets import prunable_count
from prunekit.unstructured.allocate import prune_allocated
from prunekit.unstructured.magnitude import prune_magnitude, prune_rest


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

