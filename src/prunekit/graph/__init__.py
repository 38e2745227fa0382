"""Which channels are coupled: one traced forward, labels carried through every op.

`analyze(model, example_inputs)` returns a Graph: the removable *units* (sets of channels
that must go together, across every layer they touch), the *spaces* they live in (one per
group of layers sharing a channel dimension, e.g. all convs feeding one residual stream),
and for every weight, bias, running stat and attribute, which entries go with which unit.
An op it cannot map is a PruneError naming the op and the module path: never a guess.
"""
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from prunekit._utils.inputs import tensors_of
from prunekit._utils.modes import eval_mode
from prunekit.errors import PruneError
from prunekit.graph import functional, layers, ops, products, rules
from prunekit.graph.labels import NONE, PIN, UnionFind, keep_mask, removal_table
from prunekit.graph.run import attributes_kept, meta_call, watch
from prunekit.graph.spaces import Space, spaces
from prunekit.graph.trace import Context
from prunekit.masks import raw_tensor
from prunekit.surgery.attributes import HEAD_COUNTS, HEAD_WIDTHS

log = logging.getLogger(__name__)

__all__ = ["Graph", "Space", "analyze"]

_ALWAYS = {functional.functional_linear, functional.functional_conv, functional.functional_norm, products.matmul}
_PARAMS_LABELLED = {ops.move, ops.select, ops.elementwise, ops.unary}


def _dispatch(ctx, func, name, args, kwargs, out):
    ctx.op = name
    rule = rules.rule_for(name, args)
    inputs = tensors_of((args, kwargs))
    if any(t.numel() == 0 for t in tensors_of(out)):  # empty results carry no channels
        ops.pin_inputs(ctx, func, name, args, kwargs, out)
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
    def units(self) -> np.ndarray:
        return np.concatenate([s.units for s in self.spaces]) if self.spaces else np.zeros(0, np.int64)

    def removal(self, removed) -> np.ndarray:
        """A lookup table for `keep`, built once per choice of removed units."""
        return removal_table(removed, self.uf)

    def keep(self, labels, removed) -> np.ndarray:
        """Entries of a label vector that survive removing the unit roots in `removed`."""
        return keep_mask(labels, removed, self.uf)


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
        ctx, output = _trace(model, example_inputs, ignored, heads, meta=True)
    except PruneError:
        raise
    except Exception as err:  # noqa: BLE001  data-dependent code (.item(), NMS) needs real tensors
        log.info("%s: the meta-device trace stopped (%s: %s); tracing on the inputs' device instead",
                 type(model).__name__, type(err).__name__, _first_line(err))
        ctx, output = _real_trace(model, example_inputs, ignored, heads)
    for tensor in tensors_of(output):
        if ctx.labels(tensor) is not None:
            ctx.uf.pin(ctx.labels(tensor))
    _tie_shared(model, ctx)
    candidates = _heads(model, ctx) if heads else None
    return Graph(ctx.uf, ctx.slices, ctx.attrs, ctx.events, spaces(ctx.uf, ctx.slices, candidates),
                 ignored, candidates, ctx.meta)


def _first_line(err) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""


def _real_trace(model, example_inputs, ignored, heads):
    """The trace on real tensors; a forward that fails on the example inputs is a PruneError."""
    try:
        return _trace(model, example_inputs, ignored, heads, meta=False)
    except PruneError:
        raise
    except Exception as err:  # noqa: BLE001  the user's forward, with the user's inputs
        raise PruneError(f"{type(model).__name__}(*example_inputs) failed: {type(err).__name__}: "
                         f"{_first_line(err)}") from err


def _trace(model, example_inputs, ignored, heads, meta):
    """One traced forward. What it stores on modules is undone (attributes_kept): a meta run
    leaves no meta tensor behind, and a forward that caches (YOLO's heads keep their anchors and
    input shape) runs the same path again when a pruned model is checked."""
    ctx = Context(model, unit_dim="outer" if heads else "inner")
    ctx.meta = meta
    call = lambda: model(*example_inputs)  # noqa: E731
    if meta:
        ctx.owners, call = meta_call(model, example_inputs)

    def on_op(func, name, args, kwargs, out):
        _dispatch(ctx, func, name, args, kwargs, out)
        ctx.record(name, out, tensors_of((args, kwargs)))

    def on_leaf(name, module, args, kwargs, output):
        rule = layers.opaque if name in ignored else layers.rule_for(module)
        rule(ctx, name, module, args, kwargs, output)
        ctx.record(type(module).__name__, output, tensors_of((args, kwargs)))

    with attributes_kept(model), eval_mode(model), torch.no_grad(), \
            watch(model, ignored, on_op, on_leaf, meta) as stack:
        ctx.stack = stack
        output = call()
    return ctx, output


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


