"""The weight matrices of a block that one-shot pruning touches, and what they see.

Every nn.Linear inside a block, transformers' Conv1D (GPT-2 stores its projections as
(in, out): `matrix` and `set_matrix` present every weight as (out, in)), and every expert's
slice of a mixture-of-experts block's 3-D parameters (`moe.ExpertMatrix`). Embeddings, norms,
the LM head (outside the blocks) and MoE routers (they choose the experts) stay dense.

`InputStats` accumulates, over the calibration tokens, what each method needs of a layer's
inputs: the squared norm of every input feature (Wanda) and the Gram matrix X^T X (SparseGPT's
Hessian, up to a factor of 2).
"""
import torch
from torch import nn

from prunekit.llm.moe import ExpertMatrix, expert_inputs, expert_matrices, is_experts, is_router


def _is_conv1d(module: nn.Module) -> bool:
    """transformers.pytorch_utils.Conv1D, recognised without importing transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and module.weight.dim() == 2


def block_layers(block: nn.Module) -> dict:
    """{name within the block: module or ExpertMatrix} of the weight matrices to prune, in
    definition order; a 3-D experts parameter gives one entry per expert ("mlp.experts.3.down_proj")."""
    layers, parents = {}, dict(block.named_modules())
    for name, module in block.named_modules():
        if is_experts(module):
            layers.update(expert_matrices(name, module))
        elif isinstance(module, nn.Linear) or _is_conv1d(module):
            if not is_router(name, module, parents.get(name.rpartition(".")[0])):
                layers[name] = module
    return layers


def stored(layer) -> torch.Tensor:
    """The weight as the model stores it (a Linear's weight, or an expert's 3-D slice), no copy."""
    return layer.stored() if isinstance(layer, ExpertMatrix) else layer.weight.detach()


def matrix_shape(layer) -> tuple:
    """(out, in) of the weight, without copying it (Conv1D and gpt-oss's experts store (in, out))."""
    if isinstance(layer, ExpertMatrix):
        return tuple(layer.out_in().shape)
    shape = tuple(layer.weight.shape)
    return shape[::-1] if _is_conv1d(layer) else shape


def matrix(module) -> torch.Tensor:
    """The weight as (out, in), in float32 (a copy)."""
    if isinstance(module, ExpertMatrix):
        return module.out_in().float().clone()
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


def set_matrix(module, value: torch.Tensor) -> None:
    """Write an (out, in) matrix back into the module's own layout and dtype (an expert's
    slice in place, inside its 3-D parameter)."""
    if isinstance(module, ExpertMatrix):
        with torch.no_grad():
            module.out_in().copy_(value.to(module.param.dtype))
        return
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

    def release_hessian(self) -> torch.Tensor:
        """hessian(), computed in the Gram matrix's own memory, which these statistics then let
        go (SparseGPT's peak memory at 8B is a few of these matrices)."""
        gram, self.gram = self.gram, None
        return gram.div_(max(self.tokens, 1))


def collect(block: nn.Module, layers: dict, run, gram: bool) -> dict:
    """{name: InputStats} of every layer, from `run()` (which runs the block on the calibration
    sequences) with a forward hook on each module reading its input, and for each expert matrix
    the tokens its router sent to it (moe.expert_inputs). A layer nothing reached has no entry."""
    stats, handles = {}, []
    experts = {name: layer for name, layer in layers.items() if isinstance(layer, ExpertMatrix)}

    def record(name, x):
        if name not in stats:
            stats[name] = InputStats(x.shape[-1], gram, x.device)
        stats[name].add(x)

    def hook_for(name):
        return lambda module, args, output: record(name, args[0])

    try:
        for name, module in layers.items():
            if name not in experts:
                handles.append(module.register_forward_hook(hook_for(name)))
        with expert_inputs(block, experts, record):
            run()
    finally:
        for handle in handles:
            handle.remove()
    return stats


def count_zeros(layers: dict) -> tuple:
    """(zeros, entries) over the stored weights of `layers` (Linear weights, expert slices)."""
    zeros = total = 0
    for layer in layers.values():
        weight = stored(layer)
        zeros, total = zeros + int((weight == 0).sum()), total + weight.numel()
    return zeros, total


def unpruned_weights(block: nn.Module, layers: dict) -> list:
    """Names of the block's weight matrices (2-D or more) that `layers` does not cover (routers);
    per-expert biases, stacked (experts, out), are biases, not matrices."""
    covered = {id(layer.weight) for layer in layers.values()}
    return [name for name, p in block.named_parameters()
            if p.dim() >= 2 and id(p) not in covered and not name.endswith("bias")]
