"""Peak memory of one inference forward, measured by watching every tensor torch creates.

A TorchDispatchMode sees the output of every aten op. Each new storage (deduped by data
pointer, so views and in-place results are not counted twice) adds its bytes; a
weakref.finalize on the storage subtracts them when the last tensor using it dies. The
count starts at the bytes of parameters, buffers and inputs, which stay alive throughout.
This is allocator-independent: it counts live tensor bytes, not RSS or cached blocks.
"""
import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from prunekit.measure import _run


class _LiveBytes(TorchDispatchMode):
    """Tracks current and peak bytes of live tensor storages created under the mode."""

    def __init__(self, resident: list):
        super().__init__()
        self.live = {}  # data_ptr -> nbytes; resident storages are never freed while measuring
        for tensor in resident:
            # The tensor's own bytes, not its storage's: an input sliced from a whole dataset
            # shares that dataset's storage, which the model does not need.
            self.live.setdefault(tensor.untyped_storage().data_ptr(), tensor.numel() * tensor.element_size())
        self.current = self.peak = sum(self.live.values())

    def _track(self, tensor: torch.Tensor) -> None:
        if tensor.layout != torch.strided:  # a sparse view (torch CSR) over tensors counted already
            return
        storage = tensor.untyped_storage()
        pointer, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0 or pointer in self.live:
            return
        self.live[pointer] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        finalizer = weakref.finalize(storage, self._free, pointer)
        finalizer.atexit = False

    def _free(self, pointer: int) -> None:
        self.current -= self.live.pop(pointer, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self._track(item)
        return out


def peak_memory(model: nn.Module, inputs: tuple) -> int:
    """Peak bytes of live tensors (parameters + buffers + inputs + activations) during one
    forward under eval() and no_grad."""
    resident = list(model.parameters()) + list(model.buffers()) + list(inputs)
    with _run.inference(model):
        mode = _LiveBytes(resident)
        with mode:
            output = _run.forward(model, inputs)
        peak = mode.peak
        del output
    return int(peak)
