"""The weight matrices of a block that one-shot pruning touches, and what they see.

Every nn.Linear inside a block, and transformers' Conv1D (GPT-2 stores its projections as
(in, out): `matrix` and `set_matrix` present every weight as (out, in)). Embeddings, norms and
the LM head lie outside the blocks and stay dense.

`InputStats` accumulates, over the calibration tokens, what each method needs of a layer's
inputs: the squared norm of every input feature (Wanda) and the Gram matrix X^T X (SparseGPT's
Hessian, up to a factor of 2).
"""
import torch
from torch import nn


def _is_conv1d(module: nn.Module) -> bool:
    """transformers.pytorch_utils.Conv1D, recognised without importing transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and module.weight.dim() == 2


def block_layers(block: nn.Module) -> dict:
    """{name within the block: module} of the weight matrices to prune, in forward order."""
    return {name: module for name, module in block.named_modules()
            if isinstance(module, nn.Linear) or _is_conv1d(module)}


def matrix(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in), in float32 (a copy)."""
    weight = module.weight.detach()
    return (weight.t() if _is_conv1d(module) else weight).float().clone()


def replace_matrix(module: nn.Module, value: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """Give the module a new (out, in) weight of any shape (and bias), updating its sizes."""
    weight = module.weight
    data = (value.t() if _is_conv1d(module) else value).to(weight.dtype).contiguous()
    module.weight = nn.Parameter(data, requires_grad=weight.requires_grad)
    if bias is not None and module.bias is not None:
        module.bias = nn.Parameter(bias.to(module.bias.dtype).contiguous(), requires_grad=module.bias.requires_grad)
    if _is_conv1d(module):
        module.nf = value.shape[0]
    else:
        module.out_features, module.in_features = value.shape


def set_matrix(module: nn.Module, value: torch.Tensor) -> None:
    """Write an (out, in) matrix back into the module's own layout and dtype."""
    weight = module.weight
    with torch.no_grad():
        weight.copy_((value.t() if _is_conv1d(module) else value).to(weight.dtype))


class InputStats:
    """Running statistics of one layer's inputs, over every calibration token seen."""

    def __init__(self, features: int, gram: bool, device=None):
        self.tokens = 0
        self.squares = torch.zeros(features, dtype=torch.float64, device=device)
        self.sums = torch.zeros(features, dtype=torch.float64, device=device)
        self.gram = torch.zeros(features, features, device=device) if gram else None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.tokens += x.shape[0]
        self.squares += x.double().pow(2).sum(0)
        self.sums += x.double().sum(0)
        if self.gram is not None:
            self.gram.addmm_(x.t(), x)

    def norms(self) -> torch.Tensor:
        """‖X_j‖₂ of every input feature j (float32)."""
        return self.squares.sqrt().float()

    def mean(self) -> torch.Tensor:
        return (self.sums / max(self.tokens, 1)).float()

    def hessian(self) -> torch.Tensor:
        """X^T X / tokens: the layer-wise reconstruction Hessian up to a factor of 2."""
        return self.gram / max(self.tokens, 1)


def collect(block: nn.Module, layers: dict, run, gram: bool) -> dict:
    """{name: InputStats} of every layer, from `run()` (which runs the block on the calibration
    sequences) with a forward hook on each layer reading its input."""
    stats, handles = {}, []

    def hook_for(name):
        def hook(module, args, output):
            x = args[0]
            if name not in stats:
                stats[name] = InputStats(x.shape[-1], gram, x.device)
            stats[name].add(x)
        return hook

    try:
        for name, module in layers.items():
            handles.append(module.register_forward_hook(hook_for(name)))
        run()
    finally:
        for handle in handles:
            handle.remove()
    return stats
