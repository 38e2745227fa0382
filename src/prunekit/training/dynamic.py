"""Prune-and-regrow at constant sparsity: SET (Mocanu et al. 2018, random regrowth) and RigL
(Evci et al. 2020, regrowth where the dense gradient is largest).

The model must already be masked (pk.prune_magnitude, an ERK allocation, ...). Every
`every` steps, in each masked layer, a fraction of the active weights with the smallest
magnitude is dropped and as many inactive ones are grown; the fraction decays to zero by
`end` with RigL's cosine schedule. Grown weights start at zero, so the function the network
computes changes only through the drop. Counts per layer never change.
"""
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit import masks
from prunekit._utils.validate import check_count, check_range
from prunekit.errors import PruneError

MODES = ("rigl", "set")


class DynamicSparsity:
    """Call `step(x, y)` after each optimizer step (fit(..., on_step=updater.step))."""

    def __init__(self, model, *, mode="rigl", fraction=0.3, every=100, end=None,
                 loss_fn=nn.functional.cross_entropy, seed=0):
        if mode not in MODES:
            raise PruneError(f"dynamic sparsity mode must be one of {', '.join(MODES)}, got {mode!r}")
        check_range("regrowth fraction", fraction, 0, 1, "()")
        check_count("every", every, 1)
        self.layers = [(n, m) for n, m, t in masks.masked_modules(model) if t == "weight"]
        if not self.layers:
            raise PruneError("dynamic sparsity needs a masked model: prune it first (pk.prune_magnitude)")
        groups = {}  # layers sharing weight and mask (a tied weight) move it once, gradients summed
        for index, (_, module) in enumerate(self.layers):
            key = id(masks.get_mask(module)), id(masks.raw_tensor(module))
            groups.setdefault(key, []).append(index)
        self.groups = list(groups.values())
        self.model, self.mode, self.fraction, self.every, self.end = model, mode, fraction, every, end
        self.loss_fn, self.t = loss_fn, 0
        self.generator = torch.Generator().manual_seed(seed)
        self.updates = []  # [(step, weights moved)]

    def fraction_at(self, step: int) -> float:
        """RigL's drop fraction: fraction / 2 * (1 + cos(pi * step / end)); 0 after `end`."""
        if self.end is None:
            return self.fraction
        if step >= self.end:
            return 0.0
        return self.fraction / 2 * (1 + math.cos(math.pi * step / self.end))

    def step(self, x=None, y=None) -> None:
        self.t += 1
        if self.t % self.every or self.fraction_at(self.t) == 0:
            return
        if self.mode == "rigl" and x is None:
            raise PruneError("RigL needs the batch: call step(x, y)")
        grads = _dense_gradients(self.model, self.layers, self.loss_fn, x, y) if self.mode == "rigl" else None
        moved = 0
        for group in self.groups:
            grad = None if grads is None else sum(grads[i] for i in group)
            moved += self._update(self.layers[group[0]][1], self.fraction_at(self.t), grad)
        self.updates.append((self.t, moved))

    @torch.no_grad()
    def _update(self, module, fraction, grad) -> int:
        mask, raw = masks.get_mask(module), masks.raw_tensor(module)
        active = mask.reshape(-1)
        k = min(int(fraction * int(active.sum())), int((~active).sum()))
        if k == 0:
            return 0
        magnitude = raw.detach().abs().reshape(-1).float().masked_fill(~active, math.inf)
        dropped = torch.topk(magnitude, k, largest=False).indices
        if grad is None:
            grow_score = torch.rand(active.shape, generator=self.generator)
        else:
            grow_score = grad.abs().reshape(-1).float()
        grow_score = grow_score.masked_fill(active, -math.inf)  # only weights inactive before the drop
        grown = torch.topk(grow_score, k).indices
        active[dropped] = False
        active[grown] = True
        raw.reshape(-1)[dropped] = 0
        raw.reshape(-1)[grown] = 0  # a grown connection starts at zero (and loses stale values)
        return k


def _dense_gradients(model, layers, loss_fn, x, y):
    """d loss / d effective weight (`original * mask`) of every masked layer, pruned positions
    included: the gradient of the network being trained. Opening the masks instead would
    compute with the pruned raw values, which momentum and weight decay move away from zero.
    Only these gradients are computed; the parameters' .grad are left as they are."""
    with parametrize.cached():  # each layer's effective weight is built once and reused below
        weights = [m.weight for _, m in layers]
        out = model(**x) if isinstance(x, dict) else model(x)  # a dict: keyword inputs (a Hugging Face batch)
        loss = loss_fn(out, y)  # in the loop's own mode (train)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g.detach() for w, g in zip(weights, grads)]
