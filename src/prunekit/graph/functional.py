"""Rules for functional layers: F.linear(x, self.weight) and friends outside a known module."""
from torch import nn
from torch.nn.modules.conv import _ConvNd

from prunekit._utils.inputs import tensors_of
from prunekit.graph import layers
from prunekit.graph.ops import _arg, _param_of, elementwise


def _owned(ctx, tensor):
    """[(module, name)] holding parameter `tensor`, or [] for a computed tensor."""
    return ctx.owners.get(id(tensor), []) if isinstance(tensor, nn.Parameter) else []


def _pin_input(ctx, x, dim, out):
    """A layer whose weight is computed (standardised, quantised...) keeps its channels."""
    if ctx.labels(x) is not None:
        ctx.uf.pin(ctx.labels(x))
    for tensor in tensors_of(out):
        ctx.set(tensor, None)


def functional_linear(ctx, func, name, args, kwargs, out):
    x, weight, bias = args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    weights = _owned(ctx, weight)
    if not weights:
        return _pin_input(ctx, x, -1, out)
    owner = weights[0][0]
    attr_module = owner if isinstance(ctx.model.get_submodule(owner), nn.Linear) else None
    layers.linear_core(ctx, ("param", id(weight)), x, out, weights, _owned(ctx, bias), attr_module)


def functional_conv(ctx, func, name, args, kwargs, out):
    x, weight, bias = args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    weights = _owned(ctx, weight)
    if not weights:
        return _pin_input(ctx, x, 1, out)
    transposed = "transpose" in name
    groups = _arg(args, kwargs, 7 if transposed else 6, "groups") or 1
    owner = weights[0][0]
    attr_module = owner if isinstance(ctx.model.get_submodule(owner), _ConvNd) else None
    layers.conv_core(ctx, ("param", id(weight)), x, out, weight, groups, transposed, weights,
                     _owned(ctx, bias), attr_module)


def functional_norm(ctx, func, name, args, kwargs, out):
    """F.batch_norm / group_norm / layer_norm called by a module that rewrites forward."""
    x = args[0]
    weight = {"batch_norm": _arg(args, kwargs, 3, "weight"), "group_norm": _arg(args, kwargs, 2, "weight"),
              "layer_norm": _arg(args, kwargs, 2, "weight")}.get(name)
    owners = _owned(ctx, weight)
    module = ctx.model.get_submodule(owners[0][0]) if owners else None
    expected = {"batch_norm": nn.modules.batchnorm._BatchNorm, "group_norm": nn.GroupNorm,
                "layer_norm": nn.LayerNorm}[name]
    if not isinstance(module, expected):
        return _pin_input(ctx, x, 1, out)
    rule = {"batch_norm": layers.batch_norm, "group_norm": layers.group_norm,
            "layer_norm": layers.layer_norm}[name]
    rule(ctx, owners[0][0], module, (x,), {}, out)


def rms_norm(ctx, func, name, args, kwargs, out):
    """F.rms_norm(x, normalized_shape, weight): x * rsqrt(mean(x^2)) * weight. As for
    LayerNorm, the statistic is recomputed over the channels that stay and the weight goes
    with them; a `normalized_shape` attribute of the weight's module shrinks with them."""
    x, shape, weight = args[0], _arg(args, kwargs, 1, "normalized_shape"), _arg(args, kwargs, 2, "weight")
    target = tensors_of(out)[0]
    if weight is None:
        ctx.set(target, ctx.labels(x))
    else:
        elementwise(ctx, func, "mul", (x, weight), {}, target)
    labels = ctx.labels(target)
    owner = _owned(ctx, _param_of(ctx, weight)) if weight is not None else []
    if labels is None or not owner or not isinstance(shape, (list, tuple)):
        return
    module = ctx.model.get_submodule(owner[0][0])
    if tuple(getattr(module, "normalized_shape", ())) != tuple(shape):
        return
    first = x.dim() - len(shape)
    for dim in range(first, x.dim()):
        if labels.shape[dim] > 1:
            ctx.attr(owner[0][0], "normalized_shape", ctx.channel(target, dim), position=dim - first)
