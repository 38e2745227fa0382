"""How labels flow through torch functions and tensor methods, by kind of op.

Each rule reads the labels of an op's inputs and sets those of its outputs, tying atoms
where the op couples them. An op with labelled inputs that no rule knows is a PruneError
naming it: never a guess.
"""
import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from prunekit._utils.inputs import tensors_of
from prunekit.graph import layers
from prunekit.graph.labels import NONE, along

_UNARY = """relu relu6 leaky_relu elu selu celu gelu silu mish hardswish hardsigmoid hardtanh
sigmoid tanh softplus softsign tanhshrink threshold logsigmoid dropout dropout1d dropout2d
dropout3d alpha_dropout feature_alpha_dropout neg __neg__ abs __abs__ exp exp2 expm1 log log2
log10 log1p sqrt rsqrt square sin cos tan sign erf erfc reciprocal floor ceil round trunc frac
nan_to_num normalize contiguous clone detach float half
double bfloat16 to type type_as cpu cuda requires_grad_ __invert__ logical_not isnan isinf
isfinite tril triu max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d
adaptive_max_pool2d adaptive_max_pool3d lp_pool1d lp_pool2d interpolate upsample
upsample_nearest upsample_bilinear local_response_norm data""".split()
_BINARY = """add __add__ __radd__ __iadd__ sub __sub__ __rsub__ __isub__ rsub mul __mul__
__rmul__ __imul__ multiply div __truediv__ __rtruediv__ __itruediv__ divide true_divide
floor_divide __floordiv__ remainder __mod__ fmod pow __pow__ __rpow__ maximum minimum fmax
fmin where masked_fill lerp addcmul addcdiv eq ne lt le gt ge __eq__ __ne__ __lt__ __le__
__gt__ __ge__ logical_and logical_or logical_xor __and__ __or__ __xor__ copysign atan2 hypot
clamp clip clamp_min clamp_max xlogy copy_""".split()
_REDUCE = """sum mean nansum nanmean amax amin argmax argmin std var std_mean var_mean norm
logsumexp prod all any count_nonzero median linalg_vector_norm""".split()
_MOVE = """view reshape flatten unflatten permute transpose swapaxes swapdims movedim moveaxis
squeeze unsqueeze expand expand_as repeat tile repeat_interleave flip fliplr flipud t T mT
view_as reshape_as cat concat concatenate stack hstack vstack dstack pixel_shuffle
pixel_unshuffle channel_shuffle native_channel_shuffle pad""".split()
_SELECT = """__getitem__ narrow select index_select gather take_along_dim split split_with_sizes
tensor_split unbind diagonal""".split()
_MATMUL = "matmul __matmul__ __rmatmul__ mm bmm addmm".split()
# Ops whose every output along `dim` depends on all (or all earlier) entries along it: a
# channel removed there would change the others, so channels along `dim` stay.
_ALONG_DIM = "softmax log_softmax softmin cumsum cumprod logcumsumexp cummax cummin".split()
# Statistics kept for broadcasting back (x * rsqrt(x.pow(2).mean(-1, keepdim=True)), a
# functional RMSNorm) are recomputed over the channels that stay, as LayerNorm's are.
_STATISTICS = set("mean nanmean var std var_mean std_mean norm linalg_vector_norm".split())
# Value-dependent selections: their output size depends on the data, so their input keeps
# every channel.
_PINNING = """topk sort argsort msort nonzero masked_select unique unique_consecutive kthvalue nms
batched_nms roi_align roi_pool ps_roi_align multinomial histc bincount searchsorted bucketize
scatter scatter_add scatter_reduce index_put index_add index_copy put take""".split()
# New tensors that only borrow a shape, dtype or device from their input.
_FRESH = """new_zeros new_ones new_full new_empty new_tensor zeros_like ones_like empty_like
full_like rand_like randn_like randint_like""".split()


def _base(name: str) -> str:
    """'add_' -> 'add': an in-place op labels its target like the plain one."""
    return name[:-1] if name.endswith("_") and not name.endswith("__") and name != "requires_grad_" \
        else name


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


def matmul(ctx, func, name, args, kwargs, out):
    """Product over a shared dim: entries meeting in the sum are tied, the rest carry on."""
    bias = None
    if name == "addmm":
        bias, a, b = args[0], args[1], args[2]
    elif name == "__rmatmul__":
        a, b = args[1], args[0]
    else:
        a, b = args[0], args[1]
    if a.dim() < 2 or b.dim() < 2:
        ctx.fail(f"{name!r} on a 1-d tensor")
    target = tensors_of(out)[0]
    if isinstance(b, nn.Parameter) and b.dim() == 2 and id(b) in ctx.owners:
        ctx.set(target, _weight_product(ctx, a, b, target))
    else:
        ctx.set(target, product(ctx, ctx.labels(a), a.shape, ctx.labels(b), b.shape, target.dim()))
    if bias is not None:
        elementwise(ctx, func, "add", (target, bias), {}, target)


def product(ctx, la, a_shape, lb, b_shape, ndim):
    """Labels of a @ b (a: (..., n, k), b: (..., k, p)) and the ties of the summed dim k.

    Laid out over (..., n, k, p), a's entry (i, k) meets b's entry (k, j) for every i, j:
    they are tied. A fixed operand pins the other's summed channels unless broadcast.
    """
    ga = None if la is None else np.expand_dims(_pad(la, ndim), -1)   # (..., n, k, 1)
    gb = None if lb is None else np.expand_dims(_pad(lb, ndim), -3)   # (..., 1, k, p)
    k = a_shape[-1]
    if ga is None and gb is not None and gb.shape[-2] > 1 and k > 1:
        ga = np.zeros([1] * (ndim - 1) + [k, 1], np.int64)   # fixed a: b's summed channels stay
    if gb is None and ga is not None and ga.shape[-2] > 1 and k > 1:
        gb = np.zeros([1] * (ndim - 1) + [k, 1], np.int64)
    if ga is not None and gb is not None and (ga.shape[-2] > 1 or gb.shape[-2] > 1):
        pairs = np.broadcast_arrays(ga, gb)
        ctx.uf.union(pairs[0], pairs[1])
    parts = []
    if la is not None and la.shape[-1] == 1:
        parts.append(_pad(la, ndim))
    if lb is not None and lb.shape[-2] == 1:
        parts.append(_pad(lb, ndim))
    if not parts:
        return None
    arrays = np.broadcast_arrays(*parts)
    result = np.array(arrays[0])
    for other in arrays[1:]:
        both = (result != NONE) & (other != NONE)
        ctx.uf.union(result[both], other[both])
        result = np.where(result != NONE, result, other)
    return result


def _weight_product(ctx, a, weight, target):
    """x @ W with W a (in, out) parameter: W is a layer of its own."""
    inputs = ctx.channel(a, -1)
    outputs = ctx.atoms(("param", id(weight), 1), weight.shape[1])
    for module, tensor in ctx.owners[id(weight)]:
        ctx.slice(module, tensor, 0, inputs, "in")
        ctx.slice(module, tensor, 1, outputs, "out")
    labels = np.zeros([1] * (target.dim() - 1) + [len(outputs)], dtype=np.int64)
    labels[..., :] = outputs
    return labels


def pin_inputs(ctx, func, name, args, kwargs, out):
    for tensor in tensors_of((args, kwargs)):
        if ctx.labels(tensor) is not None:
            ctx.uf.pin(ctx.labels(tensor))
    for tensor in tensors_of(out):
        ctx.set(tensor, None)


def fresh(ctx, func, name, args, kwargs, out):
    for tensor in tensors_of(out):
        ctx.set(tensor, None)


def einsum(ctx, func, name, args, kwargs, out):
    """Labels follow their subscript letter: summed letters tie operands, kept ones carry on."""
    spec = args[0].replace(" ", "")
    operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    inputs, _, output = spec.partition("->")
    if "." in spec or not output:
        ctx.fail("einsum with '...' or an implicit output")
    by_letter = {}
    for letters, operand in zip(inputs.split(","), operands):
        labels = ctx.labels(operand)
        for dim, letter in enumerate(letters):
            vector = along(labels, dim, operand.shape[dim], ctx.uf) if labels is not None \
                else np.zeros(operand.shape[dim], np.int64)
            if letter in by_letter and len(by_letter[letter]) == len(vector):
                ctx.uf.union(by_letter[letter], vector)
                vector = np.where(by_letter[letter] != NONE, by_letter[letter], vector)
            by_letter[letter] = vector
    target = tensors_of(out)[0]
    ctx.set(target, None)
    for dim, letter in enumerate(output):
        if (by_letter[letter] != NONE).any():
            ctx.place(target, dim, by_letter[letter])


def attention(ctx, func, name, args, kwargs, out):
    """scaled_dot_product_attention(q, k, v) = softmax(q @ k^T) @ v, label-wise. Without an
    explicit `scale` it divides by sqrt(q's last dim), so that dim must keep its size."""
    q, k, v = (list(args) + [kwargs.get(n) for n in ("query", "key", "value")])[:3]
    if _arg(args, kwargs, 6, "scale") is None:
        _whole_rows(ctx, ctx.labels(q))
        _whole_rows(ctx, ctx.labels(k))
    lk, lv = ctx.labels(k), ctx.labels(v)
    if kwargs.get("enable_gqa") and q.shape[-3] != k.shape[-3]:  # kv head j serves q heads j*r..
        repeat = q.shape[-3] // k.shape[-3]
        lk = None if lk is None else np.repeat(lk, repeat if lk.shape[-3] > 1 else 1, axis=-3)
        lv = None if lv is None else np.repeat(lv, repeat if lv.shape[-3] > 1 else 1, axis=-3)
    kt_shape = tuple(k.shape[:-2]) + (k.shape[-1], k.shape[-2])
    ndim = max(q.dim(), k.dim(), v.dim())
    scores = product(ctx, ctx.labels(q), q.shape, None if lk is None else np.swapaxes(lk, -1, -2),
                     kt_shape, ndim)
    scores_shape = tuple(q.shape[:-1]) + (k.shape[-2],)
    target = tensors_of(out)[0]
    ctx.set(target, product(ctx, scores, scores_shape, lv, v.shape, target.dim()))


def _whole_rows(ctx, labels):
    """Tie the entries of every row along the last dim: only whole rows (heads) can go."""
    if labels is None or labels.shape[-1] == 1:
        return
    rows = labels.reshape(-1, labels.shape[-1])
    ctx.uf.union(np.repeat(rows[:, :1], rows.shape[1] - 1, axis=1), rows[:, 1:])


RULES = {}
for _names, _rule in ((_UNARY, unary), (_BINARY, elementwise), (_REDUCE, reduce), (_MOVE, move),
                      (_SELECT, select), (_MATMUL, matmul)):
    RULES.update(dict.fromkeys(_names, _rule))
RULES.update(dict.fromkeys(_ALONG_DIM, along_dim))
RULES.update(chunk=chunk, pad=pad, roll=roll, __setitem__=setitem, scaled_dot_product_attention=attention, einsum=einsum)
RULES.update(dict.fromkeys(_FRESH, fresh))
RULES.update(dict.fromkeys(_PINNING, pin_inputs))
VALUE_DEPENDENT = frozenset(_PINNING)
# Moves whose arguments are dims, never sizes: they can't hold a stale channel count.
_SIZE_FREE = set("""flatten permute transpose swapaxes swapdims movedim moveaxis squeeze unsqueeze t T mT
cat concat concatenate stack hstack vstack dstack flip fliplr flipud channel_shuffle
native_channel_shuffle""".split())
# Ops that take sizes or bounds (view(b, 8, 64), x[:, :16]): a pruned model is checked there.
# rms_norm: a normalized_shape held elsewhere than the weight's module would be stale.
SIZED = frozenset(set(_MOVE + _SELECT + ["chunk", "rms_norm"]) - _SIZE_FREE)
# max/min are reductions with one tensor and element-wise with two.
RULES.update(max="max", min="min")


def rule_for(name: str, args):
    base = _base(name)
    rule = RULES.get(base)
    if base == "split" and isinstance(args[1] if len(args) > 1 else None, int):
        rule = chunk
    if rule in ("max", "min"):
        rule = elementwise if len(args) > 1 and isinstance(args[1], torch.Tensor) else reduce
    return rule


# -- functional layers: F.linear(x, self.weight) and friends outside a known module ---------

def _owned(ctx, tensor):
    """[(module, name)] holding parameter `tensor`, or [] for a computed tensor."""
    return ctx.owners.get(id(tensor), []) if isinstance(tensor, nn.Parameter) else []


def _arg(args, kwargs, index, name):
    return args[index] if len(args) > index else kwargs.get(name)


def _pin_input(ctx, x, dim, out):
    """A layer whose weight is computed (standardised, quantised...) keeps its channels."""
    if ctx.labels(x) is not None:
        ctx.uf.pin(ctx.labels(x))
    for tensor in tensors_of(out):
        ctx.set(tensor, None)


def functional_linear(ctx, func, name, args, kwargs, out):
    x, weight, bias = args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    weights = _owned(ctx, weight)
    if not weights:
        return _pin_input(ctx, x, -1, out)
    owner = weights[0][0]
    attr_module = owner if isinstance(ctx.model.get_submodule(owner), nn.Linear) else None
    layers.linear_core(ctx, ("param", id(weight)), x, out, weights, _owned(ctx, bias), attr_module)


def functional_conv(ctx, func, name, args, kwargs, out):
    x, weight, bias = args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    weights = _owned(ctx, weight)
    if not weights:
        return _pin_input(ctx, x, 1, out)
    transposed = "transpose" in name
    groups = _arg(args, kwargs, 7 if transposed else 6, "groups") or 1
    owner = weights[0][0]
    attr_module = owner if isinstance(ctx.model.get_submodule(owner), _ConvNd) else None
    layers.conv_core(ctx, ("param", id(weight)), x, out, weight, groups, transposed, weights,
                     _owned(ctx, bias), attr_module)


def functional_norm(ctx, func, name, args, kwargs, out):
    """F.batch_norm / group_norm / layer_norm called by a module that rewrites forward."""
    x = args[0]
    weight = {"batch_norm": _arg(args, kwargs, 3, "weight"), "group_norm": _arg(args, kwargs, 2, "weight"),
              "layer_norm": _arg(args, kwargs, 2, "weight")}.get(name)
    owners = _owned(ctx, weight)
    module = ctx.model.get_submodule(owners[0][0]) if owners else None
    expected = {"batch_norm": nn.modules.batchnorm._BatchNorm, "group_norm": nn.GroupNorm,
                "layer_norm": nn.LayerNorm}[name]
    if not isinstance(module, expected):
        return _pin_input(ctx, x, 1, out)
    rule = {"batch_norm": layers.batch_norm, "group_norm": layers.group_norm,
            "layer_norm": layers.layer_norm}[name]
    rule(ctx, owners[0][0], module, (x,), {}, out)


def rms_norm(ctx, func, name, args, kwargs, out):
    """F.rms_norm(x, normalized_shape, weight): x * rsqrt(mean(x^2)) * weight. As for
    LayerNorm, the statistic is recomputed over the channels that stay and the weight goes
    with them; a `normalized_shape` attribute of the weight's module shrinks with them."""
    x, shape, weight = args[0], _arg(args, kwargs, 1, "normalized_shape"), _arg(args, kwargs, 2, "weight")
    target = tensors_of(out)[0]
    if weight is None:
        ctx.set(target, ctx.labels(x))
    else:
        elementwise(ctx, func, "mul", (x, weight), {}, target)
    labels = ctx.labels(target)
    owner = _owned(ctx, _param_of(ctx, weight)) if weight is not None else []
    if labels is None or not owner or not isinstance(shape, (list, tuple)):
        return
    module = ctx.model.get_submodule(owner[0][0])
    if tuple(getattr(module, "normalized_shape", ())) != tuple(shape):
        return
    first = x.dim() - len(shape)
    for dim in range(first, x.dim()):
        if labels.shape[dim] > 1:
            ctx.attr(owner[0][0], "normalized_shape", ctx.channel(target, dim), position=dim - first)


RULES.update(linear=functional_linear, batch_norm=functional_norm, group_norm=functional_norm,
             layer_norm=functional_norm, rms_norm=rms_norm)
RULES.update(dict.fromkeys(["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                            "conv_transpose3d"], functional_conv))
