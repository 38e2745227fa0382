"""Criteria that need data: first-order Taylor, APoZ and mean activation.

`calibration` is an iterable of batches: a tensor (inputs), a tuple (inputs, targets), or a
dict of keyword inputs (Hugging Face style; `labels` in it gives a loss).
"""
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from prunekit._utils.modes import eval_mode
from prunekit.criteria import register_channel
from prunekit.criteria.group import accumulate, add_to_units, units
from prunekit.errors import PruneError


def _batches(calibration, name):
    if calibration is None:
        raise PruneError(f"importance {name!r} needs calibration= batches (inputs, or (inputs, targets))")
    batches = list(calibration)
    if not batches:
        raise PruneError(f"importance {name!r}: calibration= holds no batches")
    return batches


def _run(model, batch):
    """Model output and, if the batch has targets, the loss (eval mode: BatchNorm uses and
    keeps its running statistics)."""
    with eval_mode(model):
        return _forward(model, batch)


def _forward(model, batch):
    if isinstance(batch, dict):
        out = model(**batch)
        return out, getattr(out, "loss", None)
    if isinstance(batch, (tuple, list)):
        inputs, targets = batch[0], batch[1] if len(batch) > 1 else None
        out = model(inputs)
        return out, None if targets is None else F.cross_entropy(out, targets)
    return model(batch), None


@register_channel("taylor")
def taylor(graph, model, calibration=None, seed=None):
    """|sum over a unit's weights of w * dL/dw| (Molchanov et al. 2019), from the loss."""
    batches = _batches(calibration, "taylor")
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        with torch.enable_grad():
            for batch in batches:
                _, loss = _run(model, batch)
                if loss is None:
                    raise PruneError("importance 'taylor' needs targets: calibration batches of "
                                     "(inputs, targets), or dicts with 'labels'")
                loss.backward()
        products = lambda t, d: ((t.detach() * t.grad).transpose(0, d).reshape(t.shape[d], -1)  # noqa: E731
                                 .sum(1).float().numpy() if t.grad is not None else np.zeros(t.shape[d]))
        return np.abs(accumulate(graph, model, products)[0])
    finally:
        for p, g in zip(params, saved):
            p.grad = g


def _input_stats(graph, model, calibration, name, stat):
    """Per input channel of every consuming Linear/Conv, `stat(x, channel_dim)` averaged."""
    batches = _batches(calibration, name)
    consumers = {s.module for s in graph.slices if s.role == "in" and s.tensor == "weight"}
    sums, handles = {}, []

    def hook(module_name):
        def record(module, args):
            x = args[0].detach().float()
            dim = -1 if isinstance(module, nn.Linear) else x.dim() - (module.weight.dim() - 2) - 1
            sums[module_name] = sums.get(module_name, 0) + stat(x, dim)
        return record

    for module_name in consumers:
        module = model.get_submodule(module_name)
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and getattr(module, "groups", 1) == 1:
            handles.append(module.register_forward_pre_hook(hook(module_name)))
    try:
        with torch.no_grad():
            for batch in batches:
                _run(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    order = units(graph)
    total, counts = np.zeros(len(order)), np.zeros(len(order))
    for s in graph.slices:
        if s.role == "in" and s.tensor == "weight" and s.module in sums:
            values = sums[s.module].numpy() / len(batches)
            if len(values) == len(s.labels):
                add_to_units(graph, order, s.labels, values, total, counts)
    return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def _channel_mean(values, dim):
    return values.transpose(0, dim % values.dim()).reshape(values.shape[dim], -1).mean(1)


@register_channel("apoz")
def apoz(graph, model, calibration=None, seed=None):
    """1 - average percentage of zeros of a channel's activations (Hu et al. 2016)."""
    zeros = _input_stats(graph, model, calibration, "apoz", lambda x, d: _channel_mean((x == 0).float(), d))
    return np.where(np.isnan(zeros), np.inf, 1 - zeros)  # units with no measured input are kept


@register_channel("activation_mean")
def activation_mean(graph, model, calibration=None, seed=None):
    """Mean |activation| of a channel on the calibration batches."""
    means = _input_stats(graph, model, calibration, "activation_mean", lambda x, d: _channel_mean(x.abs(), d))
    return np.where(np.isnan(means), np.inf, means)
