"""Per-channel scores for structured pruning: fn(weight, out_dim) -> one score per channel."""
from . import register_channel


def _rows(weight, out_dim):
    return weight.detach().transpose(0, out_dim).reshape(weight.shape[out_dim], -1)


@register_channel("l1")
def l1(weight, out_dim):
    return _rows(weight, out_dim).abs().sum(1)


@register_channel("l2")
def l2(weight, out_dim):
    return _rows(weight, out_dim).norm(dim=1)
