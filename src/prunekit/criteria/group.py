"""Importance of structured units (sets of coupled channels). Higher = more important = kept.

Each criterion is `fn(graph, model, calibration, seed) -> scores`, one float per unit of
`graph` in `units(graph)` order. Weight-based criteria add up every tensor slice a unit
owns: the producing layer's filters, the BatchNorm entries, the consuming layer's inputs.
"""
import numpy as np
import torch
from torch import nn

from ..errors import PruneError
from ..masks import raw_tensor
from . import register_channel


def units(graph) -> np.ndarray:
    return np.sort(graph.units)


def _rows(tensor, dim):
    return tensor.detach().float().transpose(0, dim).reshape(tensor.shape[dim], -1)


def positions(graph, order, labels):
    """(entries of `labels` that belong to a unit, their unit's index in `order`)."""
    entries = np.flatnonzero(labels != 0)
    roots = graph.uf.find(labels[entries])
    where = np.searchsorted(order, roots)
    valid = (where < len(order)) & (order[np.minimum(where, len(order) - 1)] == roots)
    return entries[valid], where[valid]


def add_to_units(graph, order, labels, values, scores, counts=None):
    entries, where = positions(graph, order, labels)
    np.add.at(scores, where, np.asarray(values, dtype=np.float64)[entries])
    if counts is not None:
        np.add.at(counts, where, 1)


def accumulate(graph, model, per_index, keep_slice=lambda s, module, tensor: True):
    """Sum `per_index(tensor, dim)` over every slice (parameters only) into unit scores;
    also which units had any slice counted."""
    order = units(graph)
    scores, counts = np.zeros(len(order)), np.zeros(len(order))
    for s in graph.slices:
        module = model.get_submodule(s.module)
        tensor = raw_tensor(module, s.tensor)
        if isinstance(tensor, nn.Parameter) and keep_slice(s, module, tensor):
            add_to_units(graph, order, s.labels, per_index(tensor, s.dim), scores, counts)
    return scores, counts > 0


_CHUNK = 1 << 18  # float32 elements per chunk: small enough to stay in cache


def _sums(tensor, transform_) -> list:
    """For every dim d, the sum of transform(w) over all dims but d: one pass over chunks of
    rows in float32 (a float32 copy of a whole bf16 LLM weight costs more than the sums)."""
    w = tensor.detach()
    sums = [torch.zeros(n) for n in w.shape]
    step = max(1, _CHUNK // max(1, w[0].numel()))
    for start in range(0, w.shape[0], step):
        values = transform_(w[start:start + step].to(torch.float32, copy=True))
        for dim in range(w.dim()):
            others = [d for d in range(w.dim()) if d != dim]
            part = values.sum(others) if others else values
            if dim == 0:
                sums[0][start:start + step] = part
            else:
                sums[dim] += part
    return sums


def _per_index(transform_):
    """Sum of transform(w) over every dim but one; all dims of a tensor are summed in one
    pass and kept for the next call (a weight is usually a slice twice: outputs and inputs)."""
    cache = {}

    def per_index(tensor, dim):
        if id(tensor) not in cache:
            cache.clear()
            cache[id(tensor)] = _sums(tensor, transform_)
        return cache[id(tensor)][dim].numpy()
    return per_index


@register_channel("l1")
def l1(graph, model, calibration=None, seed=None):
    return accumulate(graph, model, _per_index(torch.abs_))[0]


@register_channel("l2")
def l2(graph, model, calibration=None, seed=None):
    return np.sqrt(accumulate(graph, model, _per_index(torch.square_))[0])


@register_channel("random")
def random(graph, model, calibration=None, seed=None):
    return np.random.default_rng(seed).random(len(units(graph)))


@register_channel("fpgm")
def fpgm(graph, model, calibration=None, seed=None):
    """Filters near the geometric median of their layer are redundant (He et al. 2019)."""
    def distances(tensor, dim):
        rows = _rows(tensor, dim)
        return torch.cdist(rows[None], rows[None])[0].sum(1).numpy()
    producing = lambda s, module, tensor: s.role == "out" and tensor.dim() > 1  # noqa: E731
    return accumulate(graph, model, distances, producing)[0]


@register_channel("lamp")
def lamp(graph, model, calibration=None, seed=None):
    """LAMP (Lee et al. 2021): squared norm over the sum of the norms of all larger units in
    the same space, so scores compare across layers of different sizes."""
    energy = l2(graph, model) ** 2
    order, scores = units(graph), np.zeros(len(energy))
    for space in graph.spaces:
        where = np.searchsorted(order, graph.uf.find(space.units))
        values = energy[where]
        ranked = np.argsort(values, kind="stable")
        suffix = np.cumsum(values[ranked][::-1])[::-1]
        scores[where[ranked]] = values[ranked] / np.maximum(suffix, 1e-30)
    return scores


@register_channel("bn_scale")
def bn_scale(graph, model, calibration=None, seed=None):
    """|gamma| of the BatchNorm a unit passes through (network slimming, Liu et al. 2017).
    Units with no BatchNorm are kept."""
    is_bn = lambda s, module, tensor: isinstance(module, nn.modules.batchnorm._BatchNorm) \
        and s.tensor == "weight"  # noqa: E731
    scores, touched = accumulate(graph, model, lambda t, d: _rows(t, d).abs().sum(1).numpy(), is_bn)
    if not touched.any():
        raise PruneError("importance 'bn_scale' needs BatchNorm layers after the pruned layers")
    return np.where(touched, scores, np.inf)


def bn_l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |gamma| over every BatchNorm: add `s * bn_l1_penalty(model)` to the training
    loss to make channels sparse before bn_scale pruning (network slimming's L1 term)."""
    terms = [m.weight.abs().sum() for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
    return torch.stack(terms).sum() if terms else torch.zeros(())
