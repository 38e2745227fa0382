"""Rules for products that contract a channel dim: matmul, einsum, attention."""
import numpy as np
from torch import nn

from prunekit._utils.inputs import tensors_of
from prunekit.graph.labels import NONE, along
from prunekit.graph.ops import _arg, _pad, elementwise


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
