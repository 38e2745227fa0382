"""Handlers for Linear, ConvNd, ConvTransposeNd and BatchNorm."""
from torch import nn

from ..errors import PruneError
from . import register, slice_tensor


@register(nn.Linear)
def linear(module, dim, keep):
    if dim == "out":
        slice_tensor(module, "weight", 0, keep)
        slice_tensor(module, "bias", 0, keep)
        module.out_features = len(keep)
    else:
        slice_tensor(module, "weight", 1, keep)
        module.in_features = len(keep)


@register(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv(module, dim, keep):
    if module.groups != 1:
        raise PruneError(f"grouped convolution ({type(module).__name__}, groups={module.groups}) "
                         "is not handled by this surgery yet; pass it in ignore=")
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    # Conv weights are (out, in, *k); transposed convs store (in, out, *k).
    out_dim, in_dim = (1, 0) if transposed else (0, 1)
    if dim == "out":
        slice_tensor(module, "weight", out_dim, keep)
        slice_tensor(module, "bias", 0, keep)
        module.out_channels = len(keep)
    else:
        slice_tensor(module, "weight", in_dim, keep)
        module.in_channels = len(keep)


@register(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def batch_norm(module, dim, keep):
    for name in ("weight", "bias", "running_mean", "running_var"):
        slice_tensor(module, name, 0, keep)
    module.num_features = len(keep)
