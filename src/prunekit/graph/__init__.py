"""Which channels are coupled: one traced forward, labels carried through every op.

`analyze(model, example_inputs)` returns a Graph: the removable *units* (sets of channels
that must go together, across every layer they touch), the *spaces* they live in (one per
group of layers sharing a channel dimension, e.g. all convs feeding one residual stream),
and for every weight, bias, running stat and attribute, which entries go with which unit.
An op it cannot map is a PruneError naming the op and the module path: never a guess.
"""
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_map

from ..errors import PruneError
from ..masks import raw_tensor
from . import layers, ops
from .labels import NONE, PIN, UnionFind, keep_mask, removal_table
from .trace import Context, WatchMode, tensors_of

__all__ = ["Graph", "Space", "analyze", "check", "pin_event", "HEAD_COUNTS", "HEAD_WIDTHS"]

_ALWAYS = {ops.functional_linear, ops.functional_conv, ops.functional_norm, ops.matmul}
_PARAMS_LABELLED = {ops.move, ops.select, ops.elementwise, ops.unary}


def _dispatch(ctx, func, name, args, kwargs, out):
    ctx.op = name
    rule = ops.rule_for(name, args)
    inputs = tensors_of((args, kwargs))
    if any(t.numel() == 0 for t in tensors_of(out)):  # empty results carry no channels
        rule = ops.pin_inputs if any(ctx.labels(t) is not None for t in inputs) else None
        for tensor in tensors_of(out):
            ctx.set(tensor, None)
        if rule is None:
            return
    labelled = any(ctx.labels(t) is not None for t in inputs)
    if rule in _ALWAYS or labelled or (rule in _PARAMS_LABELLED and any(
            isinstance(t, nn.Parameter) or id(t) in ctx.derived for t in inputs)):
        if rule is None:
            ctx.fail(f"op {name!r}")
        rule(ctx, func, name, args, kwargs, out)
        return
    for tensor in tensors_of(out):  # nothing labelled flows in: nothing labelled flows out
        ctx.set(tensor, None)


@dataclass
class Space:
    """Units sharing one channel dimension; `name` is the first layer producing it."""
    name: str
    units: np.ndarray
    modules: list = field(default_factory=list)


@dataclass
class Graph:
    uf: UnionFind
    slices: list
    attrs: list
    events: list
    spaces: list
    ignored: set = field(default_factory=set)
    candidates: set = None  # unit roots allowed to go (heads); None: every unit
    meta: bool = False      # traced on the meta device (the check runs there too)

    @property
    def needs_check(self) -> bool:
        """Whether any op with sizes or bounds (view, slice, split) touched channels: only
        there can a hard-coded size disagree with the pruned shapes."""
        return any(e.op in ops.SIZED and len(e.atoms) for e in self.events)

    @property
    def units(self) -> np.ndarray:
        return np.concatenate([s.units for s in self.spaces]) if self.spaces else np.zeros(0, np.int64)

    def removal(self, removed) -> np.ndarray:
        """A lookup table for `keep`, built once per choice of removed units."""
        return removal_table(removed, self.uf)

    def keep(self, labels, removed) -> np.ndarray:
        """Entries of a label vector that survive removing the unit roots in `removed`."""
        return keep_mask(labels, removed, self.uf)


@contextmanager
def _watch(model, ignored, on_op, on_leaf):
    """Run `on_op` for every torch call and `on_leaf(name, module, args, kwargs, output)` for
    every call of a known layer (or ignored module), whose insides are not watched."""
    names = {id(m): n for n, m in model.named_modules()}
    mode = WatchMode(on_op)
    stack = []

    def is_leaf(module):
        return module is not model and (names.get(id(module)) in ignored or layers.rule_for(module))

    def pre(module, args, kwargs):
        stack.append(names.get(id(module), "?"))
        if mode.leaf_depth or is_leaf(module):
            mode.leaf_depth += 1

    def post(module, args, kwargs, output):
        if mode.leaf_depth:
            mode.leaf_depth -= 1
            if mode.leaf_depth == 0:
                with torch._C.DisableTorchFunction():
                    on_leaf(stack[-1], module, args, kwargs, output)
        stack.pop()

    handles = []
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(module.register_forward_hook(post, with_kwargs=True))
        with mode:
            yield stack
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eval_mode(model):
    """Trace in eval mode (no BatchNorm statistics updated); restore each module's mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _tie_shared(model, ctx):
    """Slices of one tensor along one dim (tied weights, a layer called twice) share labels."""
    first = {}
    for s in ctx.slices:
        key = (id(raw_tensor(model.get_submodule(s.module), s.tensor)), s.dim)
        if key in first:
            if len(first[key]) != len(s.labels):
                raise PruneError(f"{s.module}.{s.tensor} is used with two different shapes")
            ctx.uf.union(first[key], s.labels)
        else:
            first[key] = s.labels


def _spaces(uf, slices, candidates=None) -> list:
    """Units (roots holding at least one produced channel), grouped by producing layers;
    only roots in `candidates` if given."""
    space_of, spaces = {}, []
    for s in slices:
        if s.role != "out":
            continue
        roots = uf.find(s.labels[s.labels != NONE])
        roots = np.unique(roots[roots != PIN])
        joined = {space_of[r] for r in roots.tolist() if r in space_of}
        target = min(joined) if joined else len(spaces)
        if not joined:
            spaces.append(Space(s.module, np.zeros(0, np.int64)))
        for other in sorted(joined - {target}, reverse=True):  # merge spaces tied by this layer
            for r in spaces[other].units.tolist():
                space_of[r] = target
            spaces[target].units = np.concatenate([spaces[target].units, spaces[other].units])
            spaces[target].modules += spaces[other].modules
            spaces[other] = None
        new = [r for r in roots.tolist() if r not in space_of]
        for r in new:
            space_of[r] = target
        spaces[target].units = np.concatenate([spaces[target].units, np.array(new, dtype=np.int64)])
        if s.module not in spaces[target].modules:
            spaces[target].modules.append(s.module)
    spaces = [s for s in spaces if s is not None]
    if candidates is not None:
        for space in spaces:
            space.units = np.array([u for u in space.units.tolist() if u in candidates], dtype=np.int64)
    return [s for s in spaces if len(s.units)]


def analyze(model: nn.Module, example_inputs, *, ignore=(), heads: bool = False) -> Graph:
    """Trace one forward of `model` on `example_inputs` (a tuple of args) and couple channels.

    Modules named in `ignore` are left exactly as they are: their inputs and outputs keep
    every channel. The model's outputs always keep theirs (a classifier's classes, an LM
    head's vocabulary). With `heads`, the units are attention heads: the rows of every
    projection output reshaped to (heads, head_dim), tied across q, k, v and the output
    projection by the products between them.
    """
    ignored = set(ignore)
    try:  # shapes are all the trace needs: on the meta device no arithmetic is done
        with _attributes_kept(model):
            ctx, output = _trace(model, example_inputs, ignored, heads, meta=True)
    except PruneError:
        raise
    except Exception:  # noqa: BLE001  data-dependent code (.item(), NMS) needs real tensors
        ctx, output = _trace(model, example_inputs, ignored, heads, meta=False)
    for tensor in tensors_of(output):
        if ctx.labels(tensor) is not None:
            ctx.uf.pin(ctx.labels(tensor))
    _tie_shared(model, ctx)
    candidates = _heads(model, ctx) if heads else None
    spaces = _spaces(ctx.uf, ctx.slices, candidates)
    return Graph(ctx.uf, ctx.slices, ctx.attrs, ctx.events, spaces, ignored, candidates, ctx.meta)


@contextmanager
def _attributes_kept(model):
    """Undo what a forward stores on modules outside parameters and buffers (a cache of
    anchors moved to the input's device), so a meta run leaves no meta tensor behind."""
    saved = [(m, dict(vars(m))) for m in model.modules()]
    try:
        yield
    finally:
        for module, attrs in saved:
            current = vars(module)
            for key in [k for k in current if k not in attrs]:
                del current[key]
            for key, value in attrs.items():
                if current.get(key) is not value:
                    current[key] = value


def _meta_call(model, example_inputs, resize=None):
    """model(*example_inputs) with every parameter, buffer and input on the meta device;
    returns {id(meta parameter): [(module, name)]} and the call. `resize` {(module, name):
    {dim: kept indices}} gives tensors the shapes a pruning plan will give them."""
    meta_of, owners, state, resize = {}, {}, {}, resize or {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for kind in ("_parameters", "_buffers"):
            for name, tensor in getattr(module, kind).items():
                if tensor is None:
                    continue
                if id(tensor) not in meta_of:
                    shape = list(tensor.shape)
                    for dim, index in resize.get((module_name, name), {}).items():
                        shape[dim] = len(index)
                    meta = torch.empty(shape, dtype=tensor.dtype, device="meta")
                    meta_of[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) \
                        if isinstance(tensor, nn.Parameter) else meta
                state[f"{module_name}.{name}" if module_name else name] = meta_of[id(tensor)]
                if isinstance(tensor, nn.Parameter):
                    owners.setdefault(id(meta_of[id(tensor)]), []).append((module_name, name))
    inputs = tuple(tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, list(example_inputs)))
    return owners, lambda: torch.func.functional_call(model, state, inputs, strict=False)


def _trace(model, example_inputs, ignored, heads, meta):
    ctx = Context(model, unit_dim="outer" if heads else "inner")
    ctx.meta = meta
    call = lambda: model(*example_inputs)  # noqa: E731
    if meta:
        ctx.owners, call = _meta_call(model, example_inputs)

    def on_op(func, name, args, kwargs, out):
        _dispatch(ctx, func, name, args, kwargs, out)
        ctx.record(name, out, tensors_of((args, kwargs)))

    def on_leaf(name, module, args, kwargs, output):
        rule = layers.opaque if name in ignored else layers.rule_for(module)
        rule(ctx, name, module, args, kwargs, output)
        ctx.record(type(module).__name__, output, tensors_of((args, kwargs)))

    with eval_mode(model), torch.no_grad(), _watch(model, ignored, on_op, on_leaf) as stack:
        ctx.stack = stack
        output = call()
    return ctx, output


HEAD_COUNTS = ("num_heads", "num_attention_heads", "n_head", "n_heads", "num_key_value_heads",
                "num_kv_heads")
HEAD_WIDTHS = ("all_head_size", "split_size", "inner_dim", "attn_dim")


def _heads(model, ctx) -> set:
    """Roots of the head units; records the attributes that count heads (num_heads, ...)."""
    head_roots = set()
    for module_name, rows, width in ctx.grids:
        head_roots.update(ctx.uf.find(rows[rows != NONE]).tolist())
        parent = module_name.rpartition(".")[0]
        for owner in dict.fromkeys([module_name, parent]):
            module = model.get_submodule(owner)
            for attr in HEAD_COUNTS + HEAD_WIDTHS:
                value = getattr(module, attr, None)
                scale = 1 if attr in HEAD_COUNTS else width
                if isinstance(value, int) and value == len(rows) * scale and \
                        not any(a.module == owner and a.attr == attr for a in ctx.attrs):
                    ctx.attr(owner, attr, rows)
                    ctx.attrs[-1].scale = scale
    head_roots.discard(PIN)
    return head_roots


def _matches(graph, event, shapes, removed) -> bool:
    """Same rank as traced, and every dim that carries channels has the predicted size.
    Other dims may differ: after a value-dependent op (NMS) their sizes follow the data."""
    if len(shapes) != len(event.shapes):
        return False
    for traced, actual, labels in zip(event.shapes, shapes, event.labels):
        if len(traced) != len(actual):
            return False
        if labels is None:
            continue
        for dim in range(labels.ndim):
            if labels.shape[dim] > 1 and actual[dim] != int(graph.keep(labels.reshape(-1), removed).sum()):
                return False
    return True


def check(model: nn.Module, example_inputs, graph, removed, plan=None):
    """The first traced call whose output shape on the pruned model differs from the
    prediction (a reshape with a fixed size, a slice with fixed bounds), or None.

    With `plan` (surgery.Cuts, not yet applied) the pruned model is run on the meta device
    with the planned shapes and attributes: no weight is touched.

    After the first value-dependent op (NMS, topk, nonzero) the calls and their sizes
    follow the data, which pruning changes: from there on only a failure counts, and it is
    blamed on that op.
    """
    seen, failed = [], False
    removed = graph.removal(removed)
    horizon = next((i for i, e in enumerate(graph.events) if e.op in ops.VALUE_DEPENDENT), len(graph.events))

    def on_op(func, name, args, kwargs, out):
        if tensors_of(out):  # as Context.record: calls with no tensor out are not events
            seen.append((name, [tuple(t.shape) for t in tensors_of(out)]))

    def on_leaf(name, module, args, kwargs, output):
        seen.append((type(module).__name__, [tuple(t.shape) for t in tensors_of(output)]))

    try:
        call = _meta_call(model, example_inputs, plan and plan.tensors)[1] if graph.meta \
            else lambda: model(*example_inputs)
        with _attributes_kept(model), eval_mode(model), torch.no_grad(), \
                _watch(model, graph.ignored, on_op, on_leaf):
            for (module, attr), value in (plan.attrs.items() if plan else ()):
                setattr(model.get_submodule(module), attr, value)  # undone by _attributes_kept
            call()
    except Exception:  # noqa: BLE001  the pruned model fails: blame the first unchecked event
        failed = True
    for i, event in enumerate(graph.events[:horizon]):
        if i >= len(seen) or seen[i][0] != event.op or not _matches(graph, event, seen[i][1], removed):
            return event
    return graph.events[horizon] if failed and horizon < len(graph.events) else None


def pin_event(graph, model, event, widen: int = 0) -> None:
    """Keep every channel an event touches, in every module of the same class (the same
    reshape sits in each of a model's attention layers), then regroup the units left.

    With `widen` = k > 0, keep every channel touched anywhere inside the module k levels
    above the event's, and inside each module of that class (a size may come from another
    tensor of the same module).
    """
    if widen == 0:
        for other in graph.events:
            if other.slot == event.slot:
                graph.uf.pin(other.atoms)
    else:
        parts = event.module.split(".") if event.module else []
        scope = ".".join(parts[: max(0, len(parts) - widen + 1)])
        kind = type(model.get_submodule(scope)) if scope else None
        scopes = [n for n, m in model.named_modules() if type(m) is kind] if scope else [""]
        for other in graph.events:
            if any(not s or other.module == s or other.module.startswith(s + ".") for s in scopes):
                graph.uf.pin(other.atoms)
    graph.spaces = _spaces(graph.uf, graph.slices, graph.candidates)
