"""Methods that search per-layer or per-space amounts on the dense model's validation curves."""
from prunekit.experiments.methods.context import need
from prunekit.experiments.methods.registry import register
from prunekit.search.channels import channel_curves, cost_meter, search_channels
from prunekit.search.hybrid import adaptive_hybrid
from prunekit.search.layerwise import search, sensitivity
from prunekit.train.loop import evaluate


@register("search")
def searched(model, example_inputs, sparsity, seed, context=None):
    """Per-layer sparsities by a greedy search over the dense model's validation sensitivity
    curves (search.search), then the usual fine-tuning."""
    context = need(context)
    on_val = lambda m: evaluate(m, context.dataset.val)  # noqa: E731
    if context.curves is None:  # the same dense model for every target: measure it once
        context.curves = sensitivity(model, on_val)
    search(model, on_val, sparsity, curves=context.curves)
    return model


@register("search-channels")
def searched_channels(model, example_inputs, sparsity, seed, context=None):
    """Per-space channel ratios removing `sparsity` of the parameters, by a greedy search over
    the dense model's validation curves (channel_search.search_channels), then fine-tuning."""
    context = need(context)
    on_val = lambda m: evaluate(m, context.dataset.val)  # noqa: E731
    if context.channel_curves is None:
        context.channel_curves = channel_curves(model, example_inputs, on_val, cost_meter("params", example_inputs))
    search_channels(model, example_inputs, on_val, sparsity, cost="params", curves=context.channel_curves)
    return model


@register("hybrid-adaptive")
def hybrid_adaptive(model, example_inputs, sparsity, seed, context=None):
    """Per channel space, channels removed or weights masked, whichever costs less validation
    accuracy (ties go to removal, which is what speeds up dense kernels); magnitude for the rest."""
    context = need(context)
    adaptive_hybrid(model, example_inputs, sparsity, lambda m: evaluate(m, context.dataset.val),
                    ratio=1 - (1 - sparsity) ** 0.5)
    return model
