"""Per-weight scores for unstructured pruning."""
import torch

from prunekit.criteria import register_elementwise


@register_elementwise("l1")
def l1(weights, generator):
    return weights.abs()


@register_elementwise("l2")
def l2(weights, generator):
    return weights.square()


@register_elementwise("random")
def random(weights, generator):
    return torch.rand(weights.shape, generator=generator)
