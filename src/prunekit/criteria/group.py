"""Importance of structured units (sets of coupled channels). Higher = more important = kept.

Each criterion is `fn(graph, model, calibration, seed) -> scores`, one float per unit of
`graph` in `units(graph)` order. Weight-based criteria add up every tensor slice a unit
owns: the producing layer's filters, the BatchNorm entries, the consuming layer's inputs.
"""
import numpy as np
import torch
from torch import nn

from prunekit.criteria import register_channel
from prunekit.errors import PruneError
from prunekit.masks import raw_tensor


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
    scores += np.bincount(where, np.asarray(values, dtype=np.float64)[entries], minlength=len(scores))
    if counts is not None:
        counts += np.bincount(where, minlength=len(counts))


def accumulate(graph, model, per_index, keep_slice=lambda s, module, tensor: True):
    """Sum `per_index(tensor, dim)` over every slice (parameters only) into unit scores;
    also which units had any slice counted."""
    order = units(graph)
    wheres, values = [np.zeros(0, np.int64)], [np.zeros(0)]
    for s in graph.slices:
        module = model.get_submodule(s.module)
        tensor = raw_tensor(module, s.tensor)
        if isinstance(tensor, nn.Parameter) and keep_slice(s, module, tensor):
            entries, where = positions(graph, order, s.labels)
            wheres.append(where)
            values.append(np.asarray(per_index(tensor, s.dim), dtype=np.float64)[entries])
    where = np.concatenate(wheres)  # one bincount: adding per slice was the slow part
    scores = np.bincount(where, np.concatenate(values), minlength=len(order))
    return scores, np.bincount(where, minlength=len(order)) > 0


_CHUNK = 1 << 18  # float32 elements per chunk: small enough to stay in cache


def _sums_01(w, transform) -> dict:
    """{0: sums over all dims but 0, 1: ... but 1} of transform(w), in one pass over chunks of
    rows in float32 (a float32 copy of a whole bf16 LLM weight costs more than the sums);
    each chunk is first reduced to (rows, columns), kernel dims by a product with ones
    (faster on CPU than a sum over a short last dim)."""
    rows, cols = torch.empty(w.shape[0]), torch.zeros(w.shape[1])
    kernel = w[0, 0].numel()
    ones = torch.ones(kernel)
    step = max(1, _CHUNK // max(1, w[0].numel()))
    for start in range(0, w.shape[0], step):
        values = transform(w[start:start + step].float())
        pair = values.reshape(-1, w.shape[1]) if kernel == 1 else \
            (values.reshape(-1, kernel) @ ones).reshape(-1, w.shape[1])
        rows[start:start + step] = pair.sum(1)
        cols += pair.sum(0)
    return {0: rows, 1: cols}


def _sums(w, transform, dim) -> dict:
    if w.dim() >= 2 and dim < 2:
        return _sums_01(w, transform)
    values = transform(w.float())  # a 1-d or bare parameter: small
    others = [d for d in range(w.dim()) if d != dim]
    return {dim: values.sum(others) if others else values}


def _per_index(transform):
    """Sum of transform(w) over every dim but one, kept per tensor for the next call (a
    weight is usually a slice twice: outputs and inputs)."""
    cache = {}

    def per_index(tensor, dim):
        if id(tensor) not in cache:
            cache.clear()
            cache[id(tensor)] = {}
        sums = cache[id(tensor)]
        if dim not in sums:
            sums.update(_sums(tensor.detach(), transform, dim))
        return sums[dim].numpy()
    return per_index


@register_channel("l1")
def l1(graph, model, calibration=None, seed=None):
    return accumulate(graph, model, _per_index(torch.abs))[0]


@register_channel("l2")
def l2(graph, model, calibration=None, seed=None):
    return np.sqrt(accumulate(graph, model, _per_index(torch.square))[0])


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
