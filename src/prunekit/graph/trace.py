"""Run the model once and watch every torch call, carrying channel labels along.

A TorchFunctionMode sees each torch function and tensor method the forward calls, with its
real arguments; module hooks tell which module is running and let known layer types
(Conv, Linear, norms, Embedding, attention) be handled as a whole. Any model whose forward
runs can be analysed this way: no symbolic tracing, no export.
"""
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from prunekit._utils.inputs import tensors_of
from prunekit.errors import PruneError
from prunekit.graph.labels import NONE, UnionFind, along, settle


@dataclass
class Slice:
    """Entries along `dim` of tensor `tensor` of module `module` go with their labels."""
    module: str
    tensor: str
    dim: int
    labels: np.ndarray  # one atom per index along dim; 0 = not a channel
    role: str           # "out": this layer makes the channels; "in": consumes; "follow"


@dataclass
class Attr:
    """Module attribute that must become the number of surviving labels (times `scale`), or
    a tuple holding it at `position` (normalized_shape)."""
    module: str
    attr: str
    labels: np.ndarray
    position: int = None
    scale: int = 1


@dataclass
class Event:
    """One traced call, for checking the pruned model's shapes against the prediction."""
    op: str
    module: str
    shapes: list   # output shapes
    labels: list   # output label arrays (None when unlabelled)
    seen: np.ndarray = None   # the labels of its inputs and outputs, concatenated
    slot: tuple = ()          # (module class, position among that module call's events)

    @cached_property
    def atoms(self) -> np.ndarray:
        """Every atom on its inputs and outputs (computed when asked: most events never are)."""
        atoms = np.unique(self.seen)
        return atoms[atoms != NONE]


def op_name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":  # a property such as Tensor.T
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


@dataclass
class Context:
    """Everything the rules read and write while the forward runs."""
    model: nn.Module
    uf: UnionFind = field(default_factory=UnionFind)
    slices: list = field(default_factory=list)
    attrs: list = field(default_factory=list)
    events: list = field(default_factory=list)
    store: dict = field(default_factory=dict)      # id(tensor) -> (tensor, labels)
    atom_cache: dict = field(default_factory=dict)
    stack: list = field(default_factory=list)      # running module names
    owners: dict = field(default_factory=dict)     # id(parameter) -> [(module, name)]
    unit_dim: str = "inner"                        # grids keep "inner" (channels) or "outer" (heads)
    grids: list = field(default_factory=list)      # heads seen: (module, row atoms, row width)
    op: str = ""                                   # the torch call being labelled
    derived: dict = field(default_factory=dict)    # id(tensor) -> (tensor, parameter it copies)
    counts: dict = field(default_factory=dict)     # events so far per module
    meta: bool = False                             # running on meta tensors

    def __post_init__(self):
        for module_name, module in self.model.named_modules(remove_duplicate=False):
            for tensor_name, param in module.named_parameters(recurse=False):
                self.owners.setdefault(id(param), []).append((module_name, tensor_name))

    @property
    def where(self) -> str:
        name = self.stack[-1] if self.stack else ""
        module = self.model.get_submodule(name) if name else self.model
        return f"{type(module).__name__} at {name or '<model>'!r}"

    def fail(self, what: str):
        raise PruneError(f"cannot map {what} in {self.where} for structured pruning; exclude the "
                         "module with ignore= or report the op")

    # -- labels of tensors ---------------------------------------------------------------
    def labels(self, tensor):
        """Label array broadcastable to `tensor` (same ndim), or None if unlabelled."""
        entry = self.store.get(id(tensor))
        return None if entry is None else entry[1]

    def set(self, tensor, labels) -> None:
        if labels is None:
            self.store.pop(id(tensor), None)
            return
        found = []
        labels = settle(np.asarray(labels, dtype=np.int64), self.uf, self.unit_dim, found)
        if self.op in ("view", "reshape", "unflatten"):  # a dim split into heads x head_dim
            self.grids += [(self.stack[-1] if self.stack else "", rows, width) for rows, width in found]
        if labels.ndim != tensor.dim():
            labels = labels.reshape((1,) * (tensor.dim() - labels.ndim) + labels.shape)
        if (labels == NONE).all():
            self.store.pop(id(tensor), None)
        else:
            self.store[id(tensor)] = (tensor, labels)

    def channel(self, tensor, dim: int) -> np.ndarray:
        """One label per index of `dim` of `tensor` (zeros if it carries none)."""
        size = tensor.shape[dim]
        labels = self.labels(tensor)
        if labels is None:
            return np.zeros(size, dtype=np.int64)
        return along(labels, dim, size, self.uf)

    def place(self, tensor, dim: int, vector) -> None:
        """Label `tensor` with `vector` along `dim`."""
        shape = [1] * tensor.dim()
        shape[dim] = len(vector)
        self.set(tensor, np.asarray(vector, dtype=np.int64).reshape(shape))

    # -- what pruning will touch ----------------------------------------------------------
    def atoms(self, key, n: int) -> np.ndarray:
        """Fresh atoms for `key`, the same ones when a shared layer is called again."""
        if key not in self.atom_cache:
            self.atom_cache[key] = self.uf.new(n)
        return self.atom_cache[key]

    def slice(self, module: str, tensor: str, dim: int, labels, role: str) -> None:
        self.slices.append(Slice(module, tensor, dim, np.asarray(labels, dtype=np.int64), role))

    def attr(self, module: str, attr: str, labels, position=None) -> None:
        self.attrs.append(Attr(module, attr, np.asarray(labels, dtype=np.int64), position))

    def follower(self, param, dim: int = None) -> np.ndarray:
        """Labels for a bare parameter (class token, layer scale, norm weight) on first use.

        `dim` (default: its last dim of size > 1) gets atoms that only follow: they are
        removed when tied to a layer's channels and never on their own.
        """
        if id(param) in self.store:
            return self.store[id(param)][1]
        owners = self.owners.get(id(param))
        dims = [d for d in range(param.dim()) if param.shape[d] > 1]
        if not owners or not dims:
            return None
        dim = dims[-1] if dim is None else dim
        atoms = self.atoms(("param", id(param)), param.shape[dim])
        for module, name in owners:
            self.slice(module, name, dim, atoms, "follow")
        self.place(param, dim, atoms)
        return self.labels(param)

    def record(self, op: str, outputs, inputs=()) -> None:
        tensors = tensors_of(outputs)
        if not tensors:
            return
        labels = [self.labels(t) for t in tensors]
        seen = [lab.ravel() for lab in labels + [self.labels(t) for t in inputs] if lab is not None]
        seen = np.concatenate(seen) if seen else np.zeros(0, np.int64)
        module = self.stack[-1] if self.stack else ""
        self.counts[module] = self.counts.get(module, 0) + 1
        slot = (type(self.model.get_submodule(module)).__name__, self.counts[module]) if module else (module, len(self.events))
        self.events.append(Event(op, module, [tuple(t.shape) for t in tensors], labels, seen, slot))


def _to_meta(value):
    return value.to("meta") if isinstance(value, torch.Tensor) and not value.is_meta else value


def _is_meta_device(device) -> bool:
    return device is not None and torch.device(device).type == "meta"


# Ops whose output has their input's shape and dtype: on meta tensors their output is made
# directly (torch's meta kernels for norms are Python decompositions, the slowest part of a trace).
_SAME_AS_INPUT = set("""batch_norm layer_norm group_norm instance_norm rms_norm relu relu_ relu6
gelu silu silu_ hardswish hardswish_ hardsigmoid sigmoid sigmoid_ tanh tanh_""".split())


# Where each norm takes its normalized_shape, and its per-entry tensors: (position, name).
_NORM_ARGS = {
    "layer_norm": (1, [(2, "weight"), (3, "bias")]),
    "rms_norm": (1, [(2, "weight")]),
    "group_norm": (None, [(2, "weight"), (3, "bias")]),
    "batch_norm": (None, [(1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")]),
    "instance_norm": (None, [(1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")]),
}


def _check_norm_shapes(name, args, kwargs):
    """The shape checks of the kernel skipped here: a pruning plan checked on the meta device
    must fail where a normalized_shape or a norm's weight kept its old size."""
    x, (shape_at, tensors) = args[0], _NORM_ARGS[name]
    shape = None
    if shape_at is not None:
        shape = args[shape_at] if len(args) > shape_at else kwargs.get("normalized_shape")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if tuple(x.shape[x.dim() - len(shape):]) != shape:
            raise RuntimeError(f"{name}: input {tuple(x.shape)} does not end in {shape}")
    expected = shape or (x.shape[1] if x.dim() > 1 else x.shape[0],)
    for position, key in tensors:
        tensor = args[position] if len(args) > position else kwargs.get(key)
        if isinstance(tensor, torch.Tensor) and tuple(tensor.shape) != tuple(expected):
            raise RuntimeError(f"{name}: {key} {tuple(tensor.shape)} for {tuple(expected)} entries")


def _same_as_input(name, args, kwargs):
    if name in _NORM_ARGS:
        _check_norm_shapes(name, args, kwargs)
    # in place: relu_(x), F.relu(x, inplace=True) or F.relu(x, True) (the only positional form)
    inplace = name.endswith("_") or kwargs.get("inplace") is True or (len(args) == 2 and args[1] is True)
    return args[0] if inplace else torch.empty_like(args[0])


def call_on_meta(func, name, args, kwargs):
    """`func(*args, **kwargs)` in a meta run. Tensors made from constants alone (position ids,
    causal masks) stay real on the CPU, so code that reads their values (`.item()`,
    `if mask.all()`) still runs; whatever meets a meta tensor runs on meta."""
    tensors = tensors_of((args, kwargs))
    if name == "to" and not tensors[0].is_meta:  # a constant moved to the model's device
        target = func(_to_meta(tensors[0]), *args[1:], **kwargs)
        return tensors[0].to(dtype=target.dtype)
    if not any(t.is_meta for t in tensors):
        if _is_meta_device(kwargs.get("device")):
            kwargs = {**kwargs, "device": "cpu"}
        return func(*args, **kwargs)
    if name in _SAME_AS_INPUT and isinstance(args[0], torch.Tensor) and all(t.is_meta for t in tensors):
        return _same_as_input(name, args, kwargs)
    if any(not t.is_meta for t in tensors):
        if (name == "__setitem__" or (name.endswith("_") and not name.endswith("__"))) \
                and isinstance(args[0], torch.Tensor) and not args[0].is_meta:
            raise RuntimeError(f"{name}: a real tensor written from a meta tensor")
        args, kwargs = tree_map(_to_meta, args), tree_map(_to_meta, kwargs)
    return func(*args, **kwargs)


class WatchMode(TorchFunctionMode):
    """Calls `on_op(func, name, args, kwargs, out)` after every torch call outside a leaf."""

    def __init__(self, on_op, meta=False):
        super().__init__()
        self.on_op, self.leaf_depth, self.meta = on_op, 0, meta

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs, name = kwargs or {}, op_name(func)
        out = call_on_meta(func, name, args, kwargs) if self.meta else func(*args, **kwargs)
        if self.leaf_depth == 0:
            if tensors_of(out) or name == "__setitem__":
                self.on_op(func, name, args, kwargs, out)
        return out
