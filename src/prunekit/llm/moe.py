"""Mixture-of-experts blocks: where each expert's weight matrices are, and what tokens reach them.

transformers 5 stores a block's experts as 3-D parameters of one Experts module, (experts, out,
in) (Mixtral, Qwen-MoE, OLMoE, DeepSeek-V3, ...) or transposed (experts, in, out) (gpt-oss, whose
`is_transposed` flag says so); gate and up are one fused matrix with the same input. Each
expert's slice is an `ExpertMatrix`, pruned like a Linear weight and written back in place.

An expert's inputs are only the tokens its router sends to it, and its down projection reads
act(gate)·up of those tokens: nothing a module hook can see. `expert_inputs` reads them without
per-family code: the experts are switched to transformers' "eager" implementation (a Python loop
over experts; the grouped_mm / batched_mm kernels would hide the per-expert operands), and a
TorchFunctionMode watches every linear/matmul whose weight operand is one expert's slice of a
known 3-D parameter (recognised by storage and offset) and records the other operand as that
matrix's input. Routers stay dense: they are not expert weights.
"""
import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prunekit.errors import PruneError

_EXPERT = re.compile(r"^(.*?experts\.\d+)(\.|$)")
_PRODUCTS = {"linear", "matmul", "mm", "__matmul__", "__rmatmul__"}
_COPIES = {"float", "to", "type", "bfloat16", "half", "double", "contiguous", "clone"}
_TRANSPOSES = {"t", "transpose"}
ROUTER_NAMES = ("gate", "router")


@dataclass(frozen=True, eq=False)
class ExpertMatrix:
    """One expert's weight matrix: slice `expert` of a 3-D parameter."""
    param: nn.Parameter
    expert: int
    transposed: bool     # stored (in, out), as gpt-oss does; otherwise (out, in)

    @property
    def weight(self) -> nn.Parameter:
        """The whole 3-D parameter: what a rollback keeps, and where the slice lives."""
        return self.param

    def stored(self) -> torch.Tensor:
        """The slice as stored (a view of the parameter)."""
        return self.param.detach()[self.expert]

    def out_in(self) -> torch.Tensor:
        """The slice as (out, in) (a view)."""
        return self.stored().t() if self.transposed else self.stored()


def is_experts(module: nn.Module) -> bool:
    """An Experts module holding its experts as 3-D parameters (never a Conv1d's 3-D kernel)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return False
    named = hasattr(module, "is_transposed") or type(module).__name__.lower().endswith("experts")
    return named and any(p.dim() == 3 for p in module.parameters(recurse=False))


def expert_params(module: nn.Module) -> dict:
    """{name: 3-D parameter (experts, ., .)} of an Experts module, in definition order."""
    return {name: p for name, p in module.named_parameters(recurse=False) if p.dim() == 3}


def expert_matrices(prefix: str, module: nn.Module) -> dict:
    """{"<prefix>.<e>.<param>": ExpertMatrix} of every expert of an Experts module, expert by expert."""
    params, transposed = expert_params(module), bool(getattr(module, "is_transposed", False))
    count = next(iter(params.values())).shape[0]
    return {f"{prefix}.{e}.{name}": ExpertMatrix(p, e, transposed)
            for e in range(count) for name, p in params.items()}


def expert_of(name: str) -> str | None:
    """"mlp.experts.3" for any of expert 3's matrices (3-D slice or per-expert Linear), else None."""
    match = _EXPERT.match(name)
    return match.group(1) if match else None


def is_router(name: str, module: nn.Module, parent: nn.Module | None) -> bool:
    """A Linear that routes tokens (a router, or Qwen2-MoE's shared_expert_gate): left dense."""
    leaf = name.rsplit(".", 1)[-1]
    routing = leaf in ROUTER_NAMES or leaf.endswith("_gate")
    return routing and parent is not None and hasattr(parent, "experts")


@contextmanager
def eager_experts(root: nn.Module):
    """Run every Experts module under `root` with transformers' eager loop (see the module
    docstring), whatever implementation the config asked for; put it back afterwards."""
    configs = {id(m.config): m.config for m in root.modules()
               if is_experts(m) and hasattr(getattr(m, "config", None), "_experts_implementation_internal")}
    saved = {key: config._experts_implementation_internal for key, config in configs.items()}
    try:
        for config in configs.values():
            config._experts_implementation_internal = "eager"
        yield
    finally:
        for key, config in configs.items():
            config._experts_implementation_internal = saved[key]


class _ExpertInputs(TorchFunctionMode):
    """Calls record(name, rows (tokens, in)) for each product that reads an expert matrix."""

    def __init__(self, matrices: dict, record):
        super().__init__()
        self.record = record
        self.names = {(id(m.param), m.expert): (name, m) for name, m in matrices.items()}
        self.params = {id(m.param): m.param for m in matrices.values()}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in _PRODUCTS:
            self._product(name, args, kwargs)
        elif name in _COPIES | _TRANSPOSES and args and isinstance(result, torch.Tensor) and result is not args[0]:
            self._tag_copy(name, args[0], result)
        return result

    def _tag_copy(self, name, source, result):
        """A dtype cast (or transpose) of a slice is a new tensor: carry the slice's identity."""
        found = self._find(source)
        if found is not None and result.dim() == 2:
            key, flipped = found
            result._prunekit_expert = (key, flipped != (name in _TRANSPOSES))

    def _find(self, t):
        """((param id, expert), operand is the stored slice transposed) or None."""
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            return None
        tag = getattr(t, "_prunekit_expert", None)
        if tag is not None:
            return tag
        for key, p in self.params.items():
            if p.device != t.device or t.untyped_storage().data_ptr() != p.untyped_storage().data_ptr():
                continue
            expert, rest = divmod(t.storage_offset() - p.storage_offset(), p.stride(0))
            if rest or not 0 <= expert < p.shape[0]:
                continue
            (a, b), (sa, sb) = p.shape[1:], p.stride()[1:]
            if t.shape == (a, b) and t.stride() == (sa, sb):
                return (key, expert), False
            if t.shape == (b, a) and t.stride() == (sb, sa):
                return (key, expert), True
        return None

    def _product(self, name, args, kwargs):
        x, w = args[0], (args[1] if len(args) > 1 else kwargs.get("weight", kwargs.get("other")))
        if name == "__rmatmul__":
            x, w = w, x
        right = self._find(w)
        found, left = (right, False) if right is not None else (self._find(x), True)
        if found is None or found[0] not in self.names:
            return
        if left:    # W @ X: the weight is (out, in), the inputs are the columns of X
            x, w = w, x
            rows = x.transpose(-1, -2).reshape(-1, x.shape[-2])
        else:
            rows = x.reshape(-1, x.shape[-1])
        operand_in = 1 if name == "linear" or left else 0   # linear(x, W) takes W as (out, in)
        stored_in = operand_in if not found[1] else 1 - operand_in
        matrix_name, matrix = self.names[found[0]]
        if stored_in != (0 if matrix.transposed else 1):
            raise PruneError(f"{matrix_name}: the experts' forward reads this weight as "
                             f"{'(in, out)' if stored_in == 0 else '(out, in)'}, its module says otherwise; "
                             "prunekit cannot tell its inputs (report this family)")
        self.record(matrix_name, rows)


@contextmanager
def expert_inputs(root: nn.Module, matrices: dict, record):
    """Within the block: eager experts, and record(name, inputs) for each ExpertMatrix read."""
    if not matrices:
        yield
        return
    with ExitStack() as stack:
        stack.enter_context(eager_experts(root))
        stack.enter_context(_ExpertInputs(matrices, record))
        yield
