"""The op registry: which rule labels each torch function or tensor method, by its name.

An op with labelled inputs that no rule knows is a PruneError naming it (graph.analyze);
`OPS.names()` lists every op the graph can follow.
"""
import torch

from prunekit._utils.registry import Registry
from prunekit.graph import functional, ops, products, windows
from prunekit.graph.ops import _base

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
# Value-dependent selections: their output size depends on the data, so their input keeps
# every channel.
_PINNING = """topk sort argsort msort nonzero masked_select unique unique_consecutive kthvalue nms
batched_nms roi_align roi_pool ps_roi_align multinomial histc bincount searchsorted bucketize
scatter scatter_add scatter_reduce index_put index_add index_copy put take""".split()
# New tensors that only borrow a shape, dtype or device from their input.
_FRESH = """new_zeros new_ones new_full new_empty new_tensor zeros_like ones_like empty_like
full_like rand_like randn_like randint_like""".split()

OPS = Registry("op")
for _names, _rule in ((_UNARY, ops.unary), (_BINARY, ops.elementwise), (_REDUCE, ops.reduce), (_MOVE, ops.move),
                      (_SELECT, ops.select), (_MATMUL, products.matmul), (_ALONG_DIM, ops.along_dim),
                      (_FRESH, ops.fresh), (_PINNING, ops.pin_inputs)):
    for _name in _names:
        OPS.add(_name, _rule)
for _name, _rule in dict(chunk=ops.chunk, pad=ops.pad, roll=ops.roll, __setitem__=ops.setitem,
                         scaled_dot_product_attention=products.attention, einsum=products.einsum,
                         unfold=windows.unfold, fold=windows.fold, linear=functional.functional_linear,
                         batch_norm=functional.functional_norm, group_norm=functional.functional_norm,
                         layer_norm=functional.functional_norm, rms_norm=functional.rms_norm).items():
    OPS.add(_name, _rule)
for _name in ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
    OPS.add(_name, functional.functional_conv)
# max/min are reductions with one tensor and element-wise with two: decided per call.
OPS.add("max", "max")
OPS.add("min", "min")
VALUE_DEPENDENT = frozenset(_PINNING)


def rule_for(name: str, args):
    """The rule for one call of op `name` (None: no rule)."""
    base = _base(name)
    rule = OPS.find(base)
    if base == "split" and isinstance(args[1] if len(args) > 1 else None, int):
        rule = ops.chunk
    if rule in ("max", "min"):
        rule = ops.elementwise if len(args) > 1 and isinstance(args[1], torch.Tensor) else ops.reduce
    return rule
