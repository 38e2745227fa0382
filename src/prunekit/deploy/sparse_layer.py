"""What every sparse-kernel layer shares (SparseLinear, SparseConv2d): the weight's sparse form
as buffers, a frozen bias, the kernel bound once to those tensors, and the plain layer it
stands for (`to_plain`, what pk.save and ONNX export write)."""
import contextlib

import torch
from torch import nn

from prunekit.deploy.kernels import resolve


class SparseLayer(nn.Module):
    """Base of the sparse-kernel layers: `kernel` is a spec of kernels.resolve ("delta8",
    "delta8/1t"); `parts` its tensors, registered as buffers (state_dict and pk.save see them).
    Each subclass defines `to_plain`, the plain layer it computes."""

    def __init__(self, kernel: str, parts: dict, bias=None):
        super().__init__()
        self.kernel, self.part_names = kernel, tuple(parts)
        for name, tensor in parts.items():
            self.register_buffer(name, tensor)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().contiguous(), requires_grad=False)
        self._bound = None  # the kernel bound to this layer's tensors, made at the first call
        self._bias_now = None  # the bias as a plain tensor: reading a Parameter goes through Module.__getattr__

    def _apply(self, fn, *args, **kwargs):  # .to(), .float(), ...: the tensors may move
        self._bound = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._bound = None
        return super()._load_from_state_dict(*args, **kwargs)

    def parts(self) -> dict:
        return {name: getattr(self, name) for name in self.part_names}

    def bound(self):
        """The kernel as a function (rows, bias) -> rows, bound to this layer's tensors."""
        if self._bound is None:
            chosen, threads = resolve(self.kernel)
            self._bound = chosen.bind(self.parts(), threads)
            self._bias_now = None if self.bias is None else self.bias.detach()
        return self._bound

    def dense_weight(self) -> torch.Tensor:
        """The weight as the matrix the kernel holds (rows = output features or channels)."""
        return resolve(self.kernel)[0].dense(self.parts())


@contextlib.contextmanager
def sparse_layers_as_plain(model: nn.Module):
    """Within the block, every sparse-kernel layer of `model` is the plain layer it computes
    (what pk.save writes); yields {name: kernel}; the sparse layers come back after."""
    sparse = {name: m for name, m in model.named_modules() if isinstance(m, SparseLayer)}
    try:
        for name, module in sparse.items():
            model.set_submodule(name, module.to_plain())
        yield {name: module.kernel for name, module in sparse.items()}
    finally:
        for name, module in sparse.items():
            model.set_submodule(name, module)
