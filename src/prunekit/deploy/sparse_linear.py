"""SparseLinear: a Linear layer whose weight is kept in one sparse form and run by one kernel."""
import torch
from torch import nn

from prunekit.deploy.sparse_layer import SparseLayer, checked_kernel
from prunekit.errors import PruneError


class SparseLinear(SparseLayer):
    """y = x W^T + b with W held as `kernel`'s tensors (see SparseLayer). Inference only, on
    the CPU: the kernels compute no gradients, and run float32 (other dtypes run dense)."""

    def __init__(self, in_features: int, out_features: int, kernel: str, parts: dict, bias=None):
        super().__init__(kernel, parts, bias)
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernel: str) -> "SparseLinear":
        weight = linear.weight.detach()  # a masked weight's effective value: exact zeros
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise PruneError(f"sparse kernels run float32 weights on the CPU, not {weight.dtype} on {weight.device}")
        chosen = checked_kernel(kernel, weight)
        return cls(linear.in_features, linear.out_features, kernel, chosen.pack(weight), linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the common case in few attribute reads (a small layer's whole call is ~20 us): rows of
        # float32 on the CPU, contiguous, needing no gradient, with the kernel already bound
        if (self.fresh() and x.dim() == 2 and not x.requires_grad and x.is_cpu
                and x.dtype == torch.float32 and x.shape[1] == self.in_features and x.shape[0] and x.is_contiguous()):
            return self._bound(x, self._bias_now)
        return self._any_input(x)

    def _any_input(self, x: torch.Tensor) -> torch.Tensor:
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
            y = self.bound()(flat, self._bias_now)
        if x.dim() != 2:
            y = y.reshape(*x.shape[:-1], self.out_features)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def matrix_shape(self) -> tuple:
        return self.out_features, self.in_features

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
