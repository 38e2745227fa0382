"""Shared by the structured-pruning tests: random BatchNorm statistics and the dead-channel
reference (the original with every removed channel's inputs zeroed)."""
import copy

import torch
from torch import nn


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
    """The original with every removed input slice zeroed: it must compute what the pruned
    model computes, whatever residuals, concatenations or groups lie between."""
    dead = copy.deepcopy(model)
    with torch.no_grad():
        for name, dims in removed.items():
            module = dead.get_submodule(name)
            if dims["in"]:
                index = torch.tensor(dims["in"])
                in_dim = 0 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 1
                module.weight.index_fill_(in_dim, index, 0)
    return dead
