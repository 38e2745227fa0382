"""Rules for known layer types, applied to a module call as a whole.

A rule reads the labels of the module's input, records which weight entries go with which
atoms (Slice) and which attributes count them (Attr), and labels the output. Subclasses
(timm's StdConv2d, a quantized Linear) are matched through their MRO.
"""
import numpy as np
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from prunekit._utils.inputs import tensors_of
from prunekit._utils.registry import Registry

# Keyed by layer class, or, for layers of other libraries, by qualified class name (no import
# of the library needed): "transformers.pytorch_utils.Conv1D".
LAYERS = Registry("layer")


def register(*types):
    return LAYERS.register(*types)


def _present(module, names):
    return [n for n in names if getattr(module, n, None) is not None]


def rule_for(module: nn.Module):
    """The rule for `module`, unless its class rewrites forward (timm's LayerNorm2d permutes
    first; StdConv2d standardises its weight): then the calls inside are traced instead."""
    cls = type(module)
    named = LAYERS.find(f"{cls.__module__}.{cls.__qualname__}")
    if named is not None:
        return named
    if not cls.forward.__module__.startswith("torch.nn"):
        return None
    for cls in type(module).__mro__:
        if cls in LAYERS:
            return LAYERS.get(cls)
    return None


def linear_core(ctx, key, x, out, weights, biases, attr_module=None):
    """y = x W^T + b, W (out, in): inputs consumed, fresh atoms produced."""
    inputs = ctx.channel(x, -1)
    outputs = ctx.atoms(key, out.shape[-1])
    for module, tensor in weights:
        ctx.slice(module, tensor, 1, inputs, "in")
        ctx.slice(module, tensor, 0, outputs, "out")
    for module, tensor in biases:
        ctx.slice(module, tensor, 0, outputs, "out")
    if attr_module is not None:
        ctx.attr(attr_module, "in_features", inputs)
        ctx.attr(attr_module, "out_features", outputs)
    ctx.place(out, out.dim() - 1, outputs)


@register(nn.Linear)
def linear(ctx, name, module, args, kwargs, out):
    biases = [(name, "bias")] if module.bias is not None else []
    linear_core(ctx, ("module", name), args[0], out, [(name, "weight")], biases, name)


def conv_core(ctx, key, x, out, weight, groups, transposed, weights, biases, attr_module=None):
    """Convolution of any dimension, plain, grouped or depthwise (with multiplier)."""
    channel_dim = x.dim() - (weight.dim() - 2) - 1  # 1, or 0 for an unbatched input
    w_in, w_out = (0, 1) if transposed else (1, 0)  # ConvTranspose weights are (in, out/g, *k)
    inputs = ctx.channel(x, channel_dim)
    n_out = out.shape[channel_dim]
    per_in, per_out = len(inputs) // groups, n_out // groups
    if groups == 1:
        outputs = ctx.atoms(key, n_out)
        ins, outs, role = inputs, outputs, "out"
    elif per_in == 1:  # depthwise (times a channel multiplier): output channels follow inputs
        outputs = np.repeat(inputs, per_out)
        ins, outs, role = None, (inputs if transposed else outputs), "follow"
        w_out = 0
    else:  # grouped: the same positions go from every group, so `groups` stays valid
        grid = inputs.reshape(groups, per_in)
        for row in grid[1:]:
            ctx.uf.union(grid[0], row)
        columns = ctx.atoms(key, per_out)
        outputs = np.tile(columns, groups)
        ins, outs, role = (inputs if transposed else grid[0]), (columns if transposed else outputs), "out"
    for module, tensor in weights:
        if ins is not None:
            ctx.slice(module, tensor, w_in, ins, "in")
        ctx.slice(module, tensor, w_out, outs, role)
    for module, tensor in biases:
        ctx.slice(module, tensor, 0, outputs, role)
    if attr_module is not None:
        ctx.attr(attr_module, "in_channels", inputs)
        ctx.attr(attr_module, "out_channels", outputs)
        if groups > 1 and per_in == 1:
            ctx.attr(attr_module, "groups", inputs)
    ctx.place(out, channel_dim, outputs)


@register(_ConvNd)
def conv(ctx, name, module, args, kwargs, out):
    biases = [(name, "bias")] if module.bias is not None else []
    conv_core(ctx, ("module", name), args[0], out, module.weight, module.groups,
              isinstance(module, _ConvTransposeNd), [(name, "weight")], biases, name)


def _per_channel(ctx, name, module, x, out, channel_dim, tensors, count_attr):
    inputs = ctx.channel(x, channel_dim)
    for tensor in _present(module, tensors):
        ctx.slice(name, tensor, 0, inputs, "follow")
    ctx.attr(name, count_attr, inputs)
    ctx.set(out, ctx.labels(x))
    return inputs


_STATS = ["weight", "bias", "running_mean", "running_var"]


@register(nn.modules.batchnorm._BatchNorm)
def batch_norm(ctx, name, module, args, kwargs, out):
    _per_channel(ctx, name, module, args[0], out, 1, _STATS, "num_features")


@register(nn.modules.instancenorm._InstanceNorm)
def instance_norm(ctx, name, module, args, kwargs, out):
    x = args[0]
    channel_dim = 0 if x.dim() == module._get_no_batch_dim() else 1
    _per_channel(ctx, name, module, x, out, channel_dim, _STATS, "num_features")


@register(nn.GroupNorm)
def group_norm(ctx, name, module, args, kwargs, out):
    inputs = _per_channel(ctx, name, module, args[0], out, 1, ["weight", "bias"], "num_channels")
    per_group = module.num_channels // module.num_groups
    if per_group == 1:
        ctx.attr(name, "num_groups", inputs)
    else:  # equal groups: the same positions go from every group
        grid = inputs.reshape(module.num_groups, per_group)
        for row in grid[1:]:
            ctx.uf.union(grid[0], row)


@register(nn.PReLU)
def prelu(ctx, name, module, args, kwargs, out):
    x = args[0]
    if module.num_parameters == 1:
        ctx.set(out, ctx.labels(x))
        return
    _per_channel(ctx, name, module, x, out, 1 if x.dim() >= 2 else 0, ["weight"], "num_parameters")


@register(nn.LayerNorm, nn.RMSNorm)
def layer_norm(ctx, name, module, args, kwargs, out):
    x = args[0]
    labels = ctx.labels(x)
    first = x.dim() - len(module.normalized_shape)
    if labels is not None:
        for dim in range(first, x.dim()):
            if labels.shape[dim] > 1:
                inputs = ctx.channel(x, dim)
                for tensor in _present(module, ["weight", "bias"]):
                    ctx.slice(name, tensor, dim - first, inputs, "follow")
                ctx.attr(name, "normalized_shape", inputs, position=dim - first)
    ctx.set(out, labels)


@register(nn.Embedding, nn.EmbeddingBag)
def embedding(ctx, name, module, args, kwargs, out):
    outputs = ctx.atoms(("module", name), module.embedding_dim)
    ctx.slice(name, "weight", 1, outputs, "out")
    ctx.attr(name, "embedding_dim", outputs)
    ctx.place(out, out.dim() - 1, outputs)


def conv1d_gpt2(ctx, name, module, args, kwargs, out):
    """Hugging Face's Conv1D (GPT-2): a Linear whose weight is stored (in, out), sized by nf."""
    inputs = ctx.channel(args[0], -1)
    outputs = ctx.atoms(("module", name), module.nf)
    ctx.slice(name, "weight", 0, inputs, "in")
    ctx.slice(name, "weight", 1, outputs, "out")
    ctx.slice(name, "bias", 0, outputs, "out")
    ctx.attr(name, "nx", inputs)
    ctx.attr(name, "nf", outputs)
    ctx.place(out, out.dim() - 1, outputs)


LAYERS.add("transformers.pytorch_utils.Conv1D", conv1d_gpt2)


@register(nn.MultiheadAttention, nn.RNNBase)
def opaque(ctx, name, module, args, kwargs, out):
    """Left exactly as it is: its input channels can't change, its outputs are fixed."""
    for tensor in tensors_of((args, kwargs)):
        labels = ctx.labels(tensor)
        if labels is not None:
            ctx.uf.pin(labels)
    for tensor in tensors_of(out):
        ctx.set(tensor, None)
