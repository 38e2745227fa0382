"""Rules for sliding windows: F.unfold / nn.Unfold (im2col), F.fold / nn.Fold (col2im) and
Tensor.unfold, which share the op name "unfold" with F.unfold.

F.unfold turns (N, C, H, W) into (N, C*kh*kw, L): rows c*kh*kw .. (c+1)*kh*kw - 1 are
channel c's window positions, so they carry channel c's label and go with it. F.fold is
the inverse: its kh*kw rows per output channel must go together.
"""
import numpy as np
from torch.nn import functional as F

from prunekit._utils.inputs import tensors_of
from prunekit.graph import ops
from prunekit.graph.ops import _arg


def unfold(ctx, func, name, args, kwargs, out):
    if func is not F.unfold:
        return tensor_unfold(ctx, func, name, args, kwargs, out)
    x, target = args[0], tensors_of(out)[0]
    channel_dim = x.dim() - 3  # 1, or 0 for an unbatched (C, H, W) input
    if _carries(ctx, x, range(channel_dim + 1, x.dim())):  # channels along H or W: windows mix them
        return ops.pin_inputs(ctx, func, name, args, kwargs, out)
    per_channel = target.shape[channel_dim] // x.shape[channel_dim]  # kh * kw
    ctx.place(target, channel_dim, np.repeat(ctx.channel(x, channel_dim), per_channel))


def fold(ctx, func, name, args, kwargs, out):
    x, target = args[0], tensors_of(out)[0]
    channel_dim = x.dim() - 2  # (N, C*kh*kw, L), or (C*kh*kw, L)
    if _carries(ctx, x, [x.dim() - 1]):  # channels along L: blocks overlap across them
        return ops.pin_inputs(ctx, func, name, args, kwargs, out)
    rows = ctx.channel(x, channel_dim).reshape(target.shape[channel_dim], -1)  # (C, kh*kw)
    for column in rows.T[1:]:
        ctx.uf.union(rows[:, 0], column)
    ctx.place(target, channel_dim, rows[:, 0])


def tensor_unfold(ctx, func, name, args, kwargs, out):
    """x.unfold(dim, size, step): which entries form a window depends on the size of `dim`,
    so channels along it stay; elsewhere labels move as the data does."""
    dim = _arg(args, kwargs, 1, "dimension")
    ops._pin_along(ctx, args[0], [dim] if isinstance(dim, int) else None)
    ops.move(ctx, func, name, args, kwargs, out)


def _carries(ctx, x, dims) -> bool:
    labels = ctx.labels(x)
    return labels is not None and any(ops._pad(labels, x.dim()).shape[d] > 1 for d in dims)

