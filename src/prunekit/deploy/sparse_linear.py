"""SparseLinear: a Linear layer whose weight is kept in one sparse form and run by one kernel."""
import contextlib

import torch
from torch import nn

from prunekit.deploy.kernels import resolve
from prunekit.errors import PruneError


class SparseLinear(nn.Module):
    """y = x W^T + b with W held as `kernel`'s tensors (buffers, so state_dict and pk.save see
    them); `kernel` is a spec of kernels.resolve ("delta8", "delta8/1t"). Inference only,
    float32, CPU: the kernels compute no gradients."""

    def __init__(self, in_features: int, out_features: int, kernel: str, parts: dict, bias=None):
        super().__init__()
        self.in_features, self.out_features, self.kernel = in_features, out_features, kernel
        self.part_names = tuple(parts)
        for name, tensor in parts.items():
            self.register_buffer(name, tensor)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().contiguous(), requires_grad=False)
        self._bound = None  # the kernel bound to this layer's tensors, made at the first call

    def _apply(self, fn, *args, **kwargs):  # .to(), .float(), ...: the tensors may move
        self._bound = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._bound = None
        return super()._load_from_state_dict(*args, **kwargs)

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernel: str) -> "SparseLinear":
        weight = linear.weight.detach()  # a masked weight's effective value: exact zeros
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise PruneError(f"sparse kernels run float32 weights on the CPU, not {weight.dtype} on {weight.device}")
        chosen, _ = resolve(kernel)
        if not chosen.fits(weight):
            raise PruneError(f"kernel {kernel!r} cannot hold a weight of shape {list(weight.shape)} with this pattern")
        return cls(linear.in_features, linear.out_features, kernel, chosen.pack(weight), linear.bias)

    def parts(self) -> dict:
        return {name: getattr(self, name) for name in self.part_names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise PruneError("SparseLinear runs inference only: call it under torch.no_grad(), or train the "
                             "model before pk.to_sparse")
        if x.device.type != "cpu" or x.shape[-1] != self.in_features:
            raise PruneError(f"SparseLinear takes CPU inputs of width {self.in_features}, got "
                             f"{list(x.shape)} on {x.device}")
        flat = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        if flat.dtype != torch.float32 or not flat.is_contiguous():
            flat = flat.to(torch.float32).contiguous()
        if flat.shape[0] == 0:
            y = flat.new_zeros(0, self.out_features)
        else:
            if self._bound is None:
                chosen, threads = resolve(self.kernel)
                self._bound = chosen.bind(self.parts(), threads)
            y = self._bound(flat, self.bias)
        if x.dim() != 2:
            y = y.reshape(*x.shape[:-1], self.out_features)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def dense_weight(self) -> torch.Tensor:
        return resolve(self.kernel)[0].dense(self.parts())

    def to_plain(self) -> nn.Linear:
        """The Linear layer this layer computes (what pk.save and ONNX export write)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.dense_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


@contextlib.contextmanager
def sparse_layers_as_plain(model: nn.Module):
    """Within the block, every sparse-kernel layer of `model` (SparseLinear, SparseConv2d: any
    module with `to_plain` and a `kernel`) is the plain layer it computes (what pk.save writes);
    yields {name: kernel}; the sparse layers come back after."""
    sparse = {name: m for name, m in model.named_modules() if hasattr(m, "to_plain") and hasattr(m, "kernel")}
    try:
        for name, module in sparse.items():
            model.set_submodule(name, module.to_plain())
        yield {name: module.kernel for name, module in sparse.items()}
    finally:
        for name, module in sparse.items():
            model.set_submodule(name, module)
