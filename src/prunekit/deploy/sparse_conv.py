"""SparseConv2d: a Conv2d (groups 1, zero padding) run as a sparse matrix product over its
unfolded input. A 1x1 convolution with stride 1 needs no unfolding (its input, channels last,
is already the matrix); a larger kernel pays for F.unfold's copy, so it wins only where the
weight is very sparse, and pk.to_sparse keeps it dense otherwise (timed against F.conv2d)."""
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.deploy.sparse_layer import SparseLayer, checked_kernel
from prunekit.errors import PruneError

GEOMETRY = ("kernel_size", "stride", "padding", "dilation")


def convertible(conv: nn.Module) -> bool:
    """A plain Conv2d that a matrix product over its unfolded input reproduces."""
    return (isinstance(conv, nn.Conv2d) and type(conv).forward is nn.Conv2d.forward and conv.groups == 1
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def conv_apply(run, x: torch.Tensor, bias, conv) -> torch.Tensor:
    """conv(x) computed by `run` ((rows, in) -> (rows, out)) over x's unfolded patches;
    `conv` gives the geometry (a Conv2d or a SparseConv2d)."""
    n, _, h, w = x.shape
    k, s, p, d = (conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    out_h = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    out_w = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if k == (1, 1) and s == (1, 1) and p == (0, 0):
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, -1)
    else:
        rows = F.unfold(x, k, dilation=d, padding=p, stride=s).transpose(1, 2).reshape(n * out_h * out_w, -1)
    y = run(rows.contiguous(), bias)
    return y.reshape(n, out_h, out_w, -1).permute(0, 3, 1, 2)


class SparseConv2d(SparseLayer):
    """A Conv2d whose weight, as the matrix (out, in * kh * kw), is held by one sparse kernel
    (see SparseLayer). Inference only, float32, CPU."""

    def __init__(self, conv: nn.Conv2d, kernel: str, parts: dict):
        super().__init__(kernel, parts, conv.bias)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        for attr in GEOMETRY:
            setattr(self, attr, tuple(getattr(conv, attr)))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, kernel: str) -> "SparseConv2d":
        weight = conv.weight.detach()
        if not convertible(conv) or weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise PruneError("sparse kernels run float32 Conv2d layers on the CPU with groups 1 and zero padding")
        matrix = weight.reshape(weight.shape[0], -1)
        return cls(conv, kernel, checked_kernel(kernel, matrix).pack(matrix))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.requires_grad and torch.is_grad_enabled()) or x.device.type != "cpu" or x.dim() != 4:
            raise PruneError("SparseConv2d runs inference only, on 4-D CPU inputs under torch.no_grad()")
        run = self.bound()
        return conv_apply(run, x.float(), self._bias_now, self).to(x.dtype)

    def matrix_shape(self) -> tuple:
        return self.out_channels, self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def to_plain(self) -> nn.Conv2d:
        """The Conv2d this layer computes (what pk.save and ONNX export write)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, bias=self.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(self.dense_weight().reshape(conv.weight.shape))
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, kernel={self.kernel}")
