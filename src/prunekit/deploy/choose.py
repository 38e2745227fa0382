"""pk.to_sparse: each pruned Linear (or Conv2d) layer gets the kernel fastest for it on this machine,
at the batch the example inputs give it; dense wherever no sparse kernel beats dense by a margin.

The choice is a micro-benchmark per layer: the layer's own input (captured from one forward of
the example inputs), every kernel that can hold its weight, warm-up, then interleaved rounds,
compared by the median. A sparse kernel must beat dense by `margin` (10 %) to be chosen: on
this 2-core machine a layer's median moves by 5-10 % between measurements, and a choice must
not leave a layer slower than dense where sparsity does not pay. Where the model's Linear
weights exceed the last-level cache, each timed call starts with the cache swept, as each
layer's call does inside a forward of such a model.
"""
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from prunekit._utils.inputs import as_inputs
from prunekit._utils.validate import check_count, check_range
from prunekit.deploy.kernels import ORDER, resolve, specs
from prunekit.deploy.sparse_conv import SparseConv2d, conv_apply, convertible
from prunekit.deploy.sparse_linear import SparseLinear
from prunekit.errors import PruneError
from prunekit.targets import stored_weight


def to_sparse(model: nn.Module, example_inputs, *, margin: float = 0.1, kernels=None, rounds: int = 9,
              min_sparsity: float = 0.0, report: dict | None = None) -> nn.Module:
    """Replace the model's pruned Linear layers (in place) by SparseLinear where a sparse kernel
    is measured faster than dense at the example inputs' batch; returns the model.
    `report`, if given, receives {layer: {"kernel", "batch", "seconds": {kernel: median}}}."""
    plan = plan_kernels(model, example_inputs, margin=margin, kernels=kernels, rounds=rounds,
                        min_sparsity=min_sparsity)
    apply_kernels(model, {name: row["kernel"] for name, row in plan.items()})
    if report is not None:
        report.update(plan)
    return model


def apply_kernels(model: nn.Module, choice: dict) -> nn.Module:
    """Put SparseLinear / SparseConv2d with the named kernel in place of each named Linear /
    Conv2d ("dense" leaves it)."""
    for name, kernel in choice.items():
        if kernel == "dense":
            continue
        module = model.get_submodule(name)
        if isinstance(module, nn.Linear):
            model.set_submodule(name, SparseLinear.from_linear(module, kernel))
        elif isinstance(module, nn.Conv2d):
            model.set_submodule(name, SparseConv2d.from_conv(module, kernel))
        else:
            raise PruneError(f"{name!r} is a {type(module).__name__}, not a Linear or Conv2d layer")
    return model


def candidates(model: nn.Module, min_sparsity: float = 0.0) -> dict:
    """{name: layer} of float32 CPU Linear layers (and Conv2d layers with groups 1 and zero
    padding) with zeros in their weight, none sharing its weight with another module (a tied LM
    head stays as it is)."""
    owners = {}
    for name, module in model.named_modules():
        for tensor in module.parameters(recurse=False):
            owners.setdefault(id(tensor), []).append(name)
    found = {}
    for name, module in model.named_modules():
        linear = isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward
        if not (linear or convertible(module)):
            continue  # a subclass with its own forward (LoRA, quantized) computes something else
        weight = module.weight
        if weight.dtype != torch.float32 or weight.device.type != "cpu" or _shared(module, owners):
            continue
        if float((weight == 0).float().mean()) > min_sparsity:
            found[name] = module
    return found


def plan_kernels(model, example_inputs, *, margin=0.1, kernels=None, rounds=9, min_sparsity=0.0) -> dict:
    """{layer: {"kernel", "batch", "seconds": {kernel: median seconds}}} without changing the model."""
    check_range("margin", margin, 0.0, 1.0, "[)")
    check_count("rounds", rounds, 1)
    names = list(kernels) if kernels else specs(ORDER)
    for spec in names:
        resolve(spec)  # an unknown one is refused before any timing
    layers = candidates(model, min_sparsity)
    inputs = _layer_inputs(model, example_inputs, layers)
    flush = _cache_flusher(model)
    plan = {}
    for name, module in layers.items():
        if name not in inputs:
            continue  # not reached by the example inputs: left dense
        x, matrix = inputs[name], module.weight.detach().reshape(module.weight.shape[0], -1)
        seconds = _time_kernels(module, x, [k for k in names if resolve(k)[0].fits(matrix)], rounds, flush)
        best = min(seconds, key=seconds.get)
        if seconds[best] > (1 - margin) * seconds["dense"] or not _confirmed(module, x, best, rounds, flush, margin):
            best = "dense"
        plan[name] = {"kernel": best, "batch": int(x.shape[0]), "seconds": seconds}
    return plan


def _confirmed(module, x, best, rounds, flush, margin) -> bool:
    """The winner timed again against dense alone, in fresh rounds: it must still be faster by
    half the margin. Among several kernels the fastest median is the luckiest too (measured
    here: a 3x3 convolution chosen 10 % faster came out 0.87x when timed again)."""
    again = _time_kernels(module, x, [best], rounds, flush)
    return again[best] <= (1 - margin / 2) * again["dense"]


def _time_kernels(module, x, names, rounds, flush=None) -> dict:
    """{spec: median seconds} of the layer on its input x, "dense" being the layer itself."""
    names = ["dense", *[k for k in names if k != "dense"]]
    bias = None if module.bias is None else module.bias.detach().contiguous()
    weight = module.weight.detach()  # a masked weight's value, computed once: dense runs it as a plain layer
    matrix = weight.reshape(weight.shape[0], -1)
    dense = (lambda: module._conv_forward(x, weight, bias)) if isinstance(module, nn.Conv2d) else \
        (lambda: F.linear(x, weight, bias))
    packed, run = {}, {"dense": dense}  # one packing per kernel, shared by its thread variants
    for spec in names[1:]:
        kernel, threads = resolve(spec)
        if kernel.name not in packed:
            packed[kernel.name] = kernel.pack(matrix)
        bound = kernel.bind(packed[kernel.name], threads)
        run[spec] = (lambda f=bound: conv_apply(f, x, bias, module)) if isinstance(module, nn.Conv2d) else \
            (lambda f=bound: f(x, bias))
    times = {k: [] for k in names}
    with torch.no_grad():
        for k in names:  # warm-up: caches, thread pool, first-call costs
            run[k]()
        r, spent = 0, 0.0
        # at least `rounds`, and (timed warm) more, up to 100, until 0.2 s of kernel time: a layer
        # of a few microseconds needs many samples for a median that noise does not decide
        while r < rounds or (flush is None and r < 100 and spent < 0.2):
            # interleaved, order rotated: drift in the machine's speed and what the previous kernel
            # left in the caches hit every kernel alike
            for k in names[r % len(names):] + names[:r % len(names)]:
                if flush is not None:
                    flush()
                begun = time.perf_counter()
                run[k]()
                times[k].append(time.perf_counter() - begun)
                spent += times[k][-1]
            r += 1
    return {k: statistics.median(v) for k, v in times.items()}


def last_level_cache_bytes() -> int:
    """The CPU's last-level cache (Linux sysfs), or 32 MiB where it cannot be read."""
    for index in (3, 2):
        try:
            text = open(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size").read().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * scale
    return 32 << 20


def _cache_flusher(model):
    """A function that evicts the cache, where the model's Linear weights do not fit in it: in
    a forward each layer then finds its weights in memory, not cache, and a kernel timed warm
    would be judged on the wrong bytes (dense layers of a 270M LLM looked 10-30 % faster warm).
    None where they fit (each layer finds its weights cached, as when timed warm)."""
    cache = last_level_cache_bytes()
    weights = sum(m.weight.numel() * m.weight.element_size() for m in model.modules()
                  if isinstance(m, (nn.Linear, nn.Conv2d)))
    if weights <= cache:
        return None
    sweep = torch.ones(2 * cache // 4)
    return lambda: float(sweep.sum())


def _layer_inputs(model, example_inputs, layers) -> dict:
    """Each layer's input from one forward of the example inputs: a Linear's flattened to
    (batch, in), a Conv2d's as it is."""
    seen = {}

    def hook(name):
        def record(module, args):
            if name not in seen:
                x = args[0].detach().float()
                seen[name] = (x if isinstance(module, nn.Conv2d) else x.reshape(-1, x.shape[-1])).contiguous()
        return record
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            if isinstance(example_inputs, dict):  # keyword arguments (a tokenizer's output)
                model(**example_inputs)
            else:
                model(*as_inputs(example_inputs))
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _shared(module, owners) -> bool:
    return len(owners.get(id(stored_weight(module)), [])) > 1
