"""Pruning methods that train while they prune, by name for `prunekit compare --methods`.

Each gets the same fine-tuning budget the one-shot methods get after pruning (the context's
`finetune` config), except the lottery methods, which retrain from the initial weights with
the dense model's own training config, as the lottery-ticket papers do.
"""
from dataclasses import replace

from prunekit.errors import PruneError
from prunekit.experiments.methods.context import need
from prunekit.experiments.methods.oneshot import channel_ratio_for
from prunekit.experiments.methods.registry import register
from prunekit.train.loop import fit
from prunekit.training import lottery
from prunekit.training.dynamic import DynamicSparsity
from prunekit.training.schedules import GradualPruner, Schedule, steps_per_epoch
from prunekit.training.soft import SoftChannelPruner
from prunekit.unstructured.allocate import prune_allocated
from prunekit.unstructured.magnitude import prune_magnitude

ROUNDS = 3  # iterative and lottery: prune in 3 rounds of equal compression


def _steps(context, config):
    return steps_per_epoch(len(context.dataset.train), config.batch_size, config.limit) * config.epochs


def _schedule(context, final, kind="cubic", end_fraction=0.75):
    """From 0 to `final` over the first `end_fraction` of the fine-tuning steps, updated 20 times."""
    end = max(1, int(end_fraction * _steps(context, context.finetune)))
    return Schedule(final=final, begin=0, end=end, every=max(1, end // 20), kind=kind)


def _fit(model, context, config, on_step=None, keep_best=False):
    """Train; keep_best as in fit: by default the last epoch stays (a running schedule or
    regrowth ends there), a callable limits the best-epoch choice to the epochs it allows."""
    fit(model, context.dataset, config, quiet=True, on_step=on_step, keep_best=keep_best)


@register("gradual", trains=True)
def gradual(model, example_inputs, sparsity, seed, context=None):
    """Zhu & Gupta's cubic schedule over the first half of the fine-tuning steps (ending while
    the learning rate is still high beat 3/4 in every cell of benchmarks/gradual_vs_oneshot.py);
    the best validation epoch after the schedule ends is kept."""
    context = need(context)
    pruner = GradualPruner(model, _schedule(context, sparsity, end_fraction=0.5))
    _fit(model, context, context.finetune, on_step=lambda x, y: pruner.step(), keep_best=lambda: pruner.done)
    prune_magnitude(model, sparsity)  # a schedule shorter than one due step still ends on target
    return model


@register("iterative", trains=True)
def iterative(model, example_inputs, sparsity, seed, context=None):
    """ROUNDS rounds of prune -> fine-tune, each on a third of the fine-tuning budget."""
    context = need(context)
    budget = context.finetune.limit or len(context.dataset.train)
    for round_ in range(1, ROUNDS + 1):
        prune_magnitude(model, 1 - (1 - sparsity) ** (round_ / ROUNDS))
        _fit(model, context, replace(context.finetune, limit=max(1, budget // ROUNDS)))
    return model


def _soft(model, example_inputs, sparsity, context, mode):
    context = need(context)
    ratio = channel_ratio_for(model, example_inputs, sparsity)
    schedule = _schedule(context, ratio, "cubic" if mode == "mask" else "linear")
    pruner = SoftChannelPruner(model, example_inputs, schedule, mode=mode)
    _fit(model, context, context.finetune, on_step=pruner.step)
    return pruner.finish().model


@register("structured-gradual", trains=True)
def structured_gradual(model, example_inputs, sparsity, seed, context=None):
    """Channels masked on a cubic schedule while fine-tuning, removed at the end."""
    return _soft(model, example_inputs, sparsity, context, "mask")


@register("sfp", trains=True)
def soft_filter(model, example_inputs, sparsity, seed, context=None):
    """Soft filter pruning: the weakest filters zeroed at each update but free to recover;
    the final choice removed at the end."""
    return _soft(model, example_inputs, sparsity, context, "zero")


def _dynamic(model, sparsity, context, mode, seed):
    context = need(context)
    prune_allocated(model, sparsity, "erk")  # as RigL: ERK layer densities, then regrowth
    total = _steps(context, context.finetune)
    updater = DynamicSparsity(model, mode=mode, fraction=0.3, every=max(1, total // 20),
                              end=max(1, 3 * total // 4), seed=seed)
    _fit(model, context, context.finetune, on_step=updater.step)
    return model


@register("rigl", trains=True)
def rigl(model, example_inputs, sparsity, seed, context=None):
    return _dynamic(model, sparsity, context, "rigl", seed)


@register("set", trains=True)
def set_(model, example_inputs, sparsity, seed, context=None):
    return _dynamic(model, sparsity, context, "set", seed)


def _initial(context):
    if context.initial is None:
        raise PruneError("lottery methods need the dense model's initial weights")
    return context.initial


@register("lottery", trains=True)
def lottery_ticket(model, example_inputs, sparsity, seed, context=None):
    """Iterative magnitude pruning in ROUNDS rounds from the trained dense model, the survivors
    reset to their initial values and retrained each round (layer-wise, output layer at half
    the rate, as Frankle & Carbin)."""
    context = need(context)
    rate = 1 - (1 - sparsity) ** (1 / ROUNDS)
    last = _last_layer(model)
    lottery.find_ticket(model, lambda m, on_step: _fit(m, context, context.dense, on_step, keep_best=True),
                        rounds=ROUNDS, rate=rate, initial=_initial(context),
                        overrides={last: rate / 2} if last else None)
    if lottery.masks_sparsity(model, lottery.prunable(model)) < sparsity - 1e-6:
        prune_magnitude(model, sparsity)  # the output layer's half rate leaves the total short
    return model


@register("random-mask", trains=True)
def random_mask(model, example_inputs, sparsity, seed, context=None):
    """The lottery control: random masks (same sparsity in every layer), initial weights,
    trained like a ticket round."""
    context = need(context)
    prune_magnitude(model, sparsity, scope="layer", criterion="random", seed=seed)
    lottery.rewind(model, _initial(context))
    _fit(model, context, context.dense, keep_best=True)
    return model


def _last_layer(model):
    names = [name for name, _ in lottery.prunable(model)]
    return names[-1] if names else None

