"""How labels flow through torch functions and tensor methods, by kind of op.

Each rule reads the labels of an op's inputs and sets those of its outputs, tying atoms
where the op couples them. An op with labelled inputs that no rule knows is a PruneError
naming it: never a guess.
"""
import numpy as np
import torch
from torch import nn

from prunekit._utils.inputs import tensors_of
from prunekit.graph.labels import NONE, along

# Statistics kept for broadcasting back (x * rsqrt(x.pow(2).mean(-1, keepdim=True)), a
# functional RMSNorm) are recomputed over the channels that stay, as LayerNorm's are.
_STATISTICS = set("mean nanmean var std var_mean std_mean norm linalg_vector_norm".split())


def _base(name: str) -> str:
    """'add_' -> 'add': an in-place op labels its target like the plain one."""
    return name[:-1] if name.endswith("_") and not name.endswith("__") and name != "requires_grad_" \
        else name


def _arg(args, kwargs, index, name):
    return args[index] if len(args) > index else kwargs.get(name)


def _param_of(ctx, tensor):
    """The parameter `tensor` is (or was computed from element-wise, same shape), or None."""
    if isinstance(tensor, nn.Parameter):
        return tensor
    entry = ctx.derived.get(id(tensor))
    return entry[1] if entry is not None and entry[1].shape == tensor.shape else None


def _labels_or_follower(ctx, tensor):
    labels = ctx.labels(tensor)
    param = _param_of(ctx, tensor) if labels is None else None
    if param is not None:
        labels = ctx.follower(param)
    return labels


def _pad(labels, ndim):
    return labels.reshape((1,) * (ndim - labels.ndim) + labels.shape)


def _data(args):
    """The tensors an op moves: its first argument, or each tensor in it if it is a list."""
    first = args[0]
    return list(first) if isinstance(first, (list, tuple)) else [first]


def _aligned_follower(ctx, tensor, varying, ndim):
    """A bare parameter meeting channels along one of its dims follows them (a layer scale,
    a norm weight, a position embedding); one that is broadcast across them stays fixed."""
    param = _param_of(ctx, tensor)
    if param is None:
        return None
    offset = ndim - param.dim()
    dims = [d - offset for d in sorted(varying) if d >= offset and param.shape[d - offset] > 1]
    if not varying:
        return None
    return ctx.follower(param, dims[-1]) if dims else None


def elementwise(ctx, func, name, args, kwargs, out):
    """Broadcasting op: elements meeting at one output position are tied."""
    target = tensors_of(out)[0]
    ndim = target.dim()
    inputs = [(t, ctx.labels(t)) for t in tensors_of((args, kwargs)) if t.dim() <= ndim]
    varying = {d for _, lab in inputs if lab is not None for d in range(ndim) if _pad(lab, ndim).shape[d] > 1}
    if not varying:  # only parameters and constants: `1 + weight` decides its labels later
        params = [p for p in (_param_of(ctx, t) for t, _ in inputs) if p is not None]
        if len(params) == 1 and params[0].shape == target.shape:
            ctx.derived[id(target)] = (target, params[0])
        ctx.set(target, None)
        return
    inputs = [(t, lab if lab is not None else _aligned_follower(ctx, t, varying, ndim)) for t, lab in inputs]
    varying |= {d for _, lab in inputs if lab is not None for d in range(ndim) if _pad(lab, ndim).shape[d] > 1}
    arrays = []
    for tensor, labels in inputs:
        if labels is None:  # a fixed tensor: it pins channels only where it is not broadcast
            shape = (1,) * (ndim - tensor.dim()) + tuple(tensor.shape)
            labels = np.zeros([s if d in varying else 1 for d, s in enumerate(shape)], dtype=np.int64)
            if labels.size == 1:
                continue
        arrays.append(_pad(labels, ndim))
    arrays = np.broadcast_arrays(*arrays)
    result = np.array(arrays[0])
    for other in arrays[1:]:
        ctx.uf.union(result, other)
        result = np.where(result != NONE, result, other)
    ctx.set(target, result)


def unary(ctx, func, name, args, kwargs, out):
    """Per-element or per-channel op: outputs keep the labels of the first input. A
    parameter not yet labelled (`1 + self.weight.float()`) decides its labels later."""
    source = _data(args)[0]
    labels = ctx.labels(source)
    if labels is None and _param_of(ctx, source) is not None:
        for tensor in tensors_of(out):
            ctx.derived[id(tensor)] = (tensor, _param_of(ctx, source))
        return
    for tensor in tensors_of(out):
        if labels is not None and (tensor.dim() != source.dim() or any(
                tensor.shape[d] != source.shape[d] for d in range(source.dim()) if labels.shape[d] > 1)):
            ctx.fail(f"{name!r} (it changes a channel dimension)")
        ctx.set(tensor, labels)


def reduce(ctx, func, name, args, kwargs, out):
    """Reduction: dims it keeps keep their labels. A sum, extreme or product across channels
    changes with every channel removed, so those channels stay; a statistic kept for
    broadcasting back (_STATISTICS with keepdim) is recomputed over the channels left."""
    source = args[0]
    labels = ctx.labels(source)
    dims = _reduced_dims(name, args, kwargs, source)
    for tensor in tensors_of(out):
        if labels is None:
            ctx.set(tensor, None)
        elif dims is None:  # a dim argument we can't read: match shapes, as before
            ctx.set(tensor, None if tensor.dim() == 0 else _reduced_labels(labels, source, tensor))
        else:
            padded = _pad(labels, source.dim())
            if any(padded.shape[d] > 1 for d in dims):
                if not (_base(name) in _STATISTICS and tensor.dim() == source.dim()):
                    ctx.uf.pin(labels)
                ctx.set(tensor, None)
            elif tensor.dim() == source.dim():
                ctx.set(tensor, padded)
            else:
                ctx.set(tensor, np.squeeze(padded, axis=tuple(dims)) if tensor.dim() == source.dim() - len(dims)
                        else None)


# Where a reduction takes its dim when it is given by position (norm(x, p, dim)).
_DIM_POSITION = {"norm": 2, "linalg_vector_norm": 2}


def _reduced_dims(name, args, kwargs, source):
    """The dims a reduction sums over, from its `dim` argument (all of them if there is
    none); None if it is not a plain int or tuple of ints."""
    position = _DIM_POSITION.get(_base(name), 1)
    dim = kwargs["dim"] if "dim" in kwargs else (args[position] if len(args) > position else None)
    if dim is None:
        return list(range(source.dim()))
    dims = [dim] if isinstance(dim, int) else list(dim) if isinstance(dim, (list, tuple)) else None
    if dims is None or any(isinstance(d, bool) or not isinstance(d, int) for d in dims) or not source.dim():
        return None
    return sorted({d % source.dim() for d in dims})


def _pin_along(ctx, source, dims):
    """Keep `source`'s channels if any of `dims` carries them (`dims` None: not known, keep)."""
    labels = ctx.labels(source)
    if labels is not None and (dims is None or any(_pad(labels, source.dim()).shape[d] > 1 for d in dims)):
        ctx.uf.pin(labels)


def along_dim(ctx, func, name, args, kwargs, out):
    """softmax, cumsum and the like along `dim`: channels along it stay; elsewhere per element."""
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    _pin_along(ctx, args[0], [dim] if isinstance(dim, int) else None)
    unary(ctx, func, name, args, kwargs, out)


def roll(ctx, func, name, args, kwargs, out):
    """torch.roll: which entry wraps around depends on the size, so channels rolled stay
    (no dims: the flattened tensor is rolled)."""
    dims = kwargs.get("dims", args[2] if len(args) > 2 else None)
    dims = [dims] if isinstance(dims, int) else (list(dims) if dims else None)
    _pin_along(ctx, args[0], dims)
    move(ctx, func, name, args, kwargs, out)


def _reduced_labels(labels, source, result):
    """Labels of `result`, `source` reduced over some dims (kept or squeezed)."""
    if result.dim() == source.dim():
        reduced = [d for d in range(source.dim()) if result.shape[d] != source.shape[d]]
        return None if any(labels.shape[d] > 1 for d in reduced) else labels
    # Squeezed: find the reduced dims by matching shapes from the left.
    kept_dims, j = [], 0
    for d in range(source.dim()):
        if j < result.dim() and result.shape[j] == source.shape[d] and \
                source.dim() - d - 1 >= result.dim() - j - 1:
            kept_dims.append(d)
            j += 1
    if len(kept_dims) != result.dim():
        return None
    reduced = [d for d in range(source.dim()) if d not in kept_dims]
    if any(labels.shape[d] > 1 for d in reduced):
        return None
    return labels.reshape([labels.shape[d] for d in kept_dims])


def _as_label_tensor(ctx, tensor):
    labels = _labels_or_follower(ctx, tensor)
    if labels is None:
        return torch.zeros(tensor.shape, dtype=torch.int64)
    return torch.from_numpy(np.array(np.broadcast_to(labels, tensor.shape), order="C"))


def _replay(ctx, func, name, args, kwargs, out):
    """Run the op itself on label tensors in place of its data: exact for any index move."""
    data = [_as_label_tensor(ctx, t) for t in _data(args)]
    first = data if isinstance(args[0], (list, tuple)) else data[0]
    try:
        result = func(first, *args[1:], **kwargs)
    except Exception as err:  # noqa: BLE001  an op that can't run on integers is unmapped
        ctx.fail(f"{name!r} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    return data, [t.numpy() for t in tensors_of(result)]


def move(ctx, func, name, args, kwargs, out):
    """Reshape, permute, concatenate, pad: labels move exactly as the data does."""
    if not any(ctx.labels(t) is not None or isinstance(t, nn.Parameter) for t in _data(args)):
        return fresh(ctx, func, name, args, kwargs, out)
    _, results = _replay(ctx, func, name, args, kwargs, out)
    for tensor, labels in zip(tensors_of(out), results):
        ctx.set(tensor, labels)


def pad(ctx, func, name, args, kwargs, out):
    """F.pad: borders added along dims without channels leave the labels as they were."""
    source, amounts = args[0], list(args[1] if len(args) > 1 else kwargs["pad"])
    labels = _labels_or_follower(ctx, source)
    padded = {source.dim() - 1 - i // 2 for i, a in enumerate(amounts) if a}
    if labels is not None and not any(labels.shape[d] > 1 for d in padded):
        ctx.set(tensors_of(out)[0], labels)
    else:
        move(ctx, func, name, args, kwargs, out)


def select(ctx, func, name, args, kwargs, out):
    """Indexing, slicing, splitting: a fixed part of a channel dim can't shrink with it."""
    if not any(ctx.labels(t) is not None or isinstance(t, nn.Parameter) for t in _data(args)):
        return fresh(ctx, func, name, args, kwargs, out)
    data, results = _replay(ctx, func, name, args, kwargs, out)
    source = set(np.unique(data[0].numpy())) - {NONE}
    if any(set(np.unique(r)) - {NONE} != source for r in results):
        ctx.uf.pin(np.fromiter(source, dtype=np.int64))  # fixed bounds inside channels
    for tensor, labels in zip(tensors_of(out), results):
        ctx.set(tensor, labels)


def chunk(ctx, func, name, args, kwargs, out):
    """Equal chunks (chunk, or split by one size) of a channel dim stay equal if the same
    positions go from each; unequal ones keep their channels."""
    data, results = _replay(ctx, func, name, args, kwargs, out)
    dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
    source = data[0].numpy()
    if source.shape[dim] > 1 and len(results) > 1 and \
            not (np.take(source, [0], axis=dim) == source).all():
        vectors = [along(r, dim, r.shape[dim], ctx.uf) for r in results]
        if len({len(v) for v in vectors}) > 1:
            ctx.uf.pin(np.concatenate(vectors))
        else:
            for vector in vectors[1:]:
                ctx.uf.union(vectors[0], vector)
    for tensor, labels in zip(tensors_of(out), results):
        ctx.set(tensor, labels)


def setitem(ctx, func, name, args, kwargs, out):
    """x[idx] = value: the written region and the value are tied like an element-wise op."""
    target, index, value = args[0], args[1], args[2]
    target_labels = _as_label_tensor(ctx, target)
    region = target_labels[index].numpy()
    if isinstance(value, torch.Tensor):
        value_labels = np.broadcast_to(_as_label_tensor(ctx, value).numpy(), region.shape)
        ctx.uf.union(region, value_labels)
        region = np.where(region != NONE, region, value_labels)
        target_labels[index] = torch.from_numpy(np.ascontiguousarray(region))
    ctx.set(target, target_labels.numpy())


def pin_inputs(ctx, func, name, args, kwargs, out):
    for tensor in tensors_of((args, kwargs)):
        if ctx.labels(tensor) is not None:
            ctx.uf.pin(ctx.labels(tensor))
    for tensor in tensors_of(out):
        ctx.set(tensor, None)


def fresh(ctx, func, name, args, kwargs, out):
    for tensor in tensors_of(out):
        ctx.set(tensor, None)


