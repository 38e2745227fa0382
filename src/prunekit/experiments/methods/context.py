"""What a method that trains gets from compare: the data, the budgets, the initial weights."""
from dataclasses import dataclass

from prunekit.errors import PruneError
from prunekit.train.loop import FitConfig


@dataclass
class Context:
    dataset: object
    finetune: FitConfig     # the budget every method gets after (or while) pruning
    dense: FitConfig        # how the dense model was trained (lottery retrains with it)
    initial: dict = None    # lottery.snapshot of the dense model before training
    curves: dict = None     # sensitivity curves of the dense model, once computed
    channel_curves: dict = None  # the same, one channel space at a time (search-channels)


def need(context):
    if context is None or context.dataset is None:
        raise PruneError("this method trains while it prunes: it needs data (run it from compare)")
    return context
