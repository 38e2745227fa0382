"""Pruning under torchrun: masks computed once, on rank 0 (a global threshold reads every
layer's weights), and broadcast with the weights they changed, so every rank trains the same
sparse network (the process group itself: train.distributed)."""
import torch
import torch.distributed as dist

from prunekit import masks
from prunekit.train.distributed import active, is_writer


def broadcast_masked(model) -> None:
    """Rank 0's masks, and the stored weights behind them, on every rank."""
    for _, module, name in masks.masked_modules(model):
        mask = masks.get_mask(module, name)
        as_bytes = mask.to(torch.uint8)  # gloo moves no bool tensors
        dist.broadcast(as_bytes, src=0)
        mask.copy_(as_bytes.bool())
        dist.broadcast(masks.raw_tensor(module, name).data, src=0)


class RankZero:
    """A pruner that runs on rank 0 only; whenever it changed the masks (its `changes` count
    of mask updates went up), they are broadcast with their weights."""

    def __init__(self, pruner, model):
        self.pruner, self.model = pruner, model

    def step(self, x=None, y=None) -> None:
        before = self.pruner.changes
        if is_writer():
            self.pruner.step(x, y)
        changed = torch.tensor([int(self.pruner.changes != before)])
        if active():
            dist.broadcast(changed, src=0)
            if changed.item():
                broadcast_masked(self.model)

    __call__ = step  # fit(on_step=...) calls it

    def __getattr__(self, name):  # resume, finish, inner, ...: the pruner's own
        return getattr(self.pruner, name)
