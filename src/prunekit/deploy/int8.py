"""Dynamic int8 quantization composed with pruning: Linear weights stored as int8 (one scale
per output row), activations quantized on the fly (torch's dynamic quantization, FBGEMM).

Its kernels are dense: an int8 layer reads a quarter of the fp32 bytes whatever its zeros, so
int8 and sparsity are reported apart (pruned fp32, dense int8, pruned int8). Masks are baked
in first, so the pruned zeros stay exact zeros in int8.
"""
import copy
import warnings

import torch
from torch import nn

from prunekit.deploy.sparse_layer import sparse_layers_as_plain
from prunekit.errors import PruneError
from prunekit.masks import make_permanent


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` with every Linear layer dynamically quantized to int8 (per row)."""
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError:
        raise PruneError("this torch build has no dynamic quantization (torch.ao.quantization)") from None
    with sparse_layers_as_plain(model):
        plain = make_permanent(copy.deepcopy(model)).eval()
    if not any(isinstance(m, nn.Linear) for m in plain.modules()):
        raise PruneError(f"{type(model).__name__} has no Linear layer to quantize")
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao, still shipped
        warnings.simplefilter("ignore")
        return quantize_dynamic(plain, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
