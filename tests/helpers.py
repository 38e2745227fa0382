"""Shared by the test files: small seeded models, random BatchNorm statistics, and the
dead-channel reference (the original with every removed channel's inputs zeroed)."""
import copy

import torch
from torch import nn


def make_mlp(*sizes, seed=0, relu=True, flatten=False) -> nn.Sequential:
    """Linear layers sizes[0] -> ... -> sizes[-1], ReLU between (not after the last), drawn
    after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    layers = [nn.Flatten()] if flatten else []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if relu else [])
    return nn.Sequential(*(layers[:-1] if relu else layers))


def randomize_norms(model, seed=0):
    """Non-trivial BatchNorm statistics and affine terms, so a wrong index shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=generator) * 2 - 1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=generator) - 0.5)
    return model.eval()


def dead_copy(model, removed):
    """The original with every removed input channel zeroed in the layer that reads it: it
    must compute what the pruned model computes, whatever residuals, concatenations or
    groups lie between."""
    dead = copy.deepcopy(model)
    with torch.no_grad():
        for name, dims in removed.items():
            if dims["in"]:
                _zero_inputs(dead, name, dims["in"])
    return dead


def _zero_inputs(model, name, channels):
    """Zero the weights that read input `channels` (a grouped conv's input c is column
    c % per-group-inputs of its group's filters; a bare weight is named module.param)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        model.get_parameter(name).index_fill_(1, torch.tensor(channels), 0)
        return
    weight = module.weight
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        weight.index_fill_(0, torch.tensor(channels), 0)
        return
    groups = getattr(module, "groups", 1)
    per_in, per_out = weight.shape[1], weight.shape[0] // groups
    for c in channels:
        group = c // per_in
        weight[group * per_out:(group + 1) * per_out, c % per_in] = 0
