"""What every sparse-kernel layer shares (SparseLinear, SparseConv2d): the weight's sparse form
as buffers, a frozen bias, the kernel bound once to those tensors, and the plain layer it
stands for (`to_plain`, what pk.save and ONNX export write)."""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.deploy import build, form_checks
from prunekit.deploy.kernels import _OwnKernel, resolve
from prunekit.errors import PruneError


class SparseLayer(nn.Module):
    """Base of the sparse-kernel layers: `kernel` is a spec of kernels.resolve ("delta8",
    "delta8/1t"); `parts` its tensors, registered as buffers (state_dict and pk.save see them).
    Each subclass defines `to_plain`, the plain layer it computes, and `matrix_shape`, the
    (rows, width) of its weight as a matrix.

    The buffers are input like any other (load_state_dict, a file, in-place edits), so binding a
    kernel checks them first (form_checks, linear in the kept values, once per bind), and a
    layer binds again whenever a buffer was replaced or changed in place. After a dtype
    conversion (.half(), .double()) the C kernels no longer fit: the layer computes with its
    weight decoded to that dtype, dense."""

    def __init__(self, kernel: str, parts: dict, bias=None):
        super().__init__()
        self.kernel, self.part_names = kernel, tuple(parts)
        for name, tensor in parts.items():
            self.register_buffer(name, tensor)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().contiguous(), requires_grad=False)
        self._bound = None  # the kernel bound to this layer's tensors, made at the first call
        self._bias_now = None  # the bias as a plain tensor: reading a Parameter goes through Module.__getattr__
        self._watched = ()  # (tensor, its _version) of each tensor the bound kernel reads

    def _apply(self, fn, *args, **kwargs):  # .to(), .float(), ...: the tensors may move
        self._bound = None
        return super()._apply(fn, *args, **kwargs)

    def __setattr__(self, name, value):  # a buffer or the bias replaced: the kernel binds again
        if name in self.__dict__.get("part_names", ()) or name == "bias":
            self.__dict__["_bound"] = None
        super().__setattr__(name, value)

    def __getstate__(self):
        """Copies and pickles (deepcopy, torch.save) leave the bound kernel behind: it points at
        this layer's tensors; a copy binds to its own at its first call."""
        return {**self.__dict__, "_bound": None, "_bias_now": None, "_watched": ()}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        self._bound = None
        self._check(self._incoming(state_dict, prefix, local_metadata))  # before any buffer changes
        return super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def _incoming(self, state_dict, prefix, local_metadata) -> dict:
        """The parts as load_state_dict will leave them: a tensor of the same shape is copied
        into the buffer (taking its dtype); with assign=True it replaces the buffer."""
        assign = local_metadata.get("assign_to_params_buffers", False)
        parts = self.parts()
        for name, current in parts.items():
            given = state_dict.get(prefix + name)
            if isinstance(given, torch.Tensor) and (assign or given.shape == current.shape):
                parts[name] = given if assign else given.to(current.dtype)
        return parts

    def parts(self) -> dict:
        return {name: getattr(self, name) for name in self.part_names}

    def _check(self, parts) -> None:
        try:
            resolve(self.kernel)[0].check(parts, *self.matrix_shape())
        except PruneError as err:
            raise PruneError(f"{type(self).__name__} ({self.kernel}, weight {list(self.matrix_shape())}): "
                             f"its sparse form is damaged: {err}") from None

    def bound(self):
        """The kernel as a function (rows, bias) -> rows, bound to this layer's tensors."""
        if not self.fresh():
            chosen, threads = resolve(self.kernel)
            parts = self.parts()
            self._check(parts)
            bias = None if self.bias is None else self.bias.detach()
            rows = self.matrix_shape()[0]
            if bias is not None and (bias.dim() != 1 or bias.numel() != rows):
                raise PruneError(f"{type(self).__name__} ({self.kernel}): its bias has shape {list(bias.shape)}, "
                                 f"not [{rows}]")
            if chosen.native(parts) and (bias is None or form_checks.exact_dtypes({"b": bias}, {"b": torch.float32})):
                self._bound = chosen.bind(parts, threads)
            else:
                self._bound = DenseFallback(chosen.dense(parts))
            self._bias_now = bias
            self._watched = tuple((t, t._version) for t in (*parts.values(), *([] if bias is None else [bias])))
        return self._bound

    def fresh(self) -> bool:
        """True when a kernel is bound and none of its tensors changed since (the fast path's test)."""
        return self._bound is not None and all(t._version == v for t, v in self._watched)

    def dense_weight(self) -> torch.Tensor:
        """The weight as the matrix the kernel holds (rows = output features or channels)."""
        return resolve(self.kernel)[0].dense(self.parts())


class DenseFallback:
    """The layer's weight decoded, run dense in its own dtype: what a sparse layer computes
    once its tensors are not what its kernel reads (after .half(), .double())."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight

    def __call__(self, x, bias):
        w = self.weight
        return F.linear(x.to(w.dtype), w, None if bias is None else bias.to(w.dtype))


def checked_kernel(kernel: str, weight: torch.Tensor):
    """The kernel named `kernel`, once it can hold `weight` (a matrix); else one PruneError saying
    why: our C kernels unavailable on this machine, or a weight the kernel's form cannot hold."""
    chosen, _ = resolve(kernel)
    if isinstance(chosen, _OwnKernel) and not build.available():
        raise PruneError(f"kernel {kernel!r} is one of prunekit's C kernels, unavailable here "
                         f"({build.unavailable_reason()}): use 'torch-csr' or keep the layer dense")
    if not chosen.fits(weight):
        raise PruneError(f"kernel {kernel!r} cannot hold a weight of shape {list(weight.shape)} with this pattern")
    return chosen


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
