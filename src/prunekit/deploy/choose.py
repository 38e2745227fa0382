"""pk.to_sparse: each pruned Linear (or Conv2d) layer gets the kernel fastest for it on this machine,
at the batch the example inputs give it; dense wherever no sparse kernel beats dense by a margin.

Per layer: a bytes-and-FLOPs cost model predicts each kernel's speedup (the prior), then a
micro-benchmark times the layer on its own input (captured from one forward of the example
inputs) with every kernel that can hold its weight: warm-up, then interleaved rounds, order
rotated. deploy/decide.py turns the two into a choice: a measurement overturns the prior only
when it clearly does (the median speedup's 95 % interval on the other side of the 10 % margin),
and a choice that overturns it must hold again in fresh rounds. On a loaded machine the timings
get noisy and the prior decides; on a quiet one they are tight and decide. Where the model's
Linear weights exceed the last-level cache, each timed call starts with the cache swept, as
each layer's call does inside a forward of such a model. Last, the whole model is timed on the
chosen kernels against dense, interleaved; if it is not faster, it stays dense.

Each layer's choice and why ("reason") is in `model.to_sparse_report` (and `report`).
"""
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from prunekit._utils.inputs import as_inputs
from prunekit._utils.validate import check_count, check_range
from prunekit.deploy import build, decide, formats
from prunekit.deploy.kernels import ORDER, _OwnKernel, resolve, specs
from prunekit.deploy.sparse_conv import SparseConv2d, conv_apply, convertible
from prunekit.deploy.sparse_linear import SparseLinear
from prunekit.errors import PruneError
from prunekit.targets import stored_weight

SAMPLE_SECONDS = 0.2  # timed warm, a layer (or the model) is run for at least this long, up to
MAX_ROUNDS = 100      # this many rounds: a layer of a few microseconds needs many for a tight median


def to_sparse(model: nn.Module, example_inputs, *, margin: float = 0.1, kernels=None, rounds: int = 9,
              min_sparsity: float = 0.0, report: dict | None = None, check_model: bool = True) -> nn.Module:
    """Replace the model's pruned Linear layers (in place) by SparseLinear where a sparse kernel
    is measured (or, where timings are too noisy to say, predicted) faster than dense at the
    example inputs' batch, then keep them only if the whole model runs faster than dense; returns
    the model. `model.to_sparse_report` (and `report`, if given, its "layers") says per layer
    what was chosen and why (see plan_kernels), and how the whole model compared ("model")."""
    plan = plan_kernels(model, example_inputs, margin=margin, kernels=kernels, rounds=rounds,
                        min_sparsity=min_sparsity)
    chosen = {name: row["kernel"] for name, row in plan.items() if row["kernel"] != "dense"}
    originals = {name: model.get_submodule(name) for name in chosen}
    whole = None
    try:
        apply_kernels(model, chosen)
        if check_model and chosen:
            whole = _check_model(model, example_inputs, originals, rounds)
    except BaseException:
        _swap_in(model, originals)  # a failed call leaves the model as it was
        raise
    if whole is not None and not whole["kept"]:
        _swap_in(model, originals)
        for name in chosen:
            plan[name] = {**plan[name], "kernel": "dense", "layer_kernel": chosen[name],
                          "reason": f"{plan[name]['reason']}; {whole['reason']}"}
    model.to_sparse_report = {"threads": torch.get_num_threads(), "margin": margin, "model": whole, "layers": plan}
    if report is not None:
        report.update(plan)
    return model


def apply_kernels(model: nn.Module, choice: dict) -> nn.Module:
    """Put SparseLinear / SparseConv2d with the named kernel in place of each named Linear /
    Conv2d ("dense" leaves it). Where prunekit's C kernels cannot be had (no compiler), the layers
    naming them stay dense, computing the same, with one warning: a model saved on a machine with
    a compiler loads on one without. Only a choice naming them builds them."""
    own = {name for name, kernel in choice.items() if isinstance(resolve(kernel)[0], _OwnKernel)}
    dense = own if own and not build.available() else set()
    if dense:
        warnings.warn(f"prunekit's C kernels are unavailable ({build.unavailable_reason()}): "
                      f"{len(dense)} layer(s) run dense instead", RuntimeWarning, stacklevel=2)
    for name, kernel in choice.items():
        if kernel == "dense":
            continue
        module = model.get_submodule(name)
        if name in dense and isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
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
    """{layer: row} without changing the model. A row: "kernel" (the choice), "reason" (one
    line: why), "prior_kernel" and "prior" ({spec: speedup the cost model predicts}), "seconds"
    ({spec: median seconds}), "spread" ({spec: [25th, 75th percentile seconds]}), "speedup"
    ({spec: {"median", "low", "high"}}: dense / spec per round, its median and 95 % interval, None
    where too few rounds bound it), "batch", "threads", "rounds"."""
    check_range("margin", margin, 0.0, 1.0, "[)")
    check_count("rounds", rounds, 1)
    names = list(kernels) if kernels else specs(ORDER)
    for spec in names:
        resolve(spec)  # an unknown one is refused before any timing
    layers = candidates(model, min_sparsity)
    inputs = _layer_inputs(model, example_inputs, layers)
    flush = _cache_flusher(model)
    threads = torch.get_num_threads()
    plan = {}
    for name, module in layers.items():
        if name not in inputs:
            continue  # not reached by the example inputs: left dense
        x, matrix = inputs[name], module.weight.detach().reshape(module.weight.shape[0], -1)
        fitting = [k for k in names if k != "dense" and resolve(k)[0].fits(matrix)]
        packed = _pack(matrix, fitting)
        prior = decide.predicted_speedups(_loads(module, x, matrix, packed, fitting, threads))
        samples = _sample_kernels(module, x, fitting, packed, rounds, flush)
        verdict = decide.decide(prior, samples, margin, threads)
        if verdict["overturns"]:  # the prior is overturned only by what fresh rounds repeat
            again = _sample_kernels(module, x, [verdict["at_issue"]], packed, rounds, flush)
            verdict = decide.confirm(verdict, decide.decide({k: prior[k] for k in again}, again, margin, threads))
        plan[name] = _row(verdict, prior, samples, int(x.shape[0]), threads)
    return plan


def _row(verdict, prior, samples, batch, threads) -> dict:
    def bounded(v):
        return v if 0 < v < float("inf") else None
    spread = {k: statistics.quantiles(v, n=4, method="inclusive")[::2] if len(v) > 1 else [v[0], v[0]]
              for k, v in samples.items()}
    return {"kernel": verdict["kernel"], "reason": verdict["reason"], "prior_kernel": verdict["prior_kernel"],
            "prior": prior, "seconds": {k: statistics.median(v) for k, v in samples.items()}, "spread": spread,
            "speedup": {k: {"median": m, "low": bounded(lo), "high": bounded(hi)}
                        for k, (m, lo, hi) in verdict["measured"].items()},
            "batch": batch, "threads": threads, "rounds": len(samples["dense"])}


def _pack(matrix, names) -> dict:
    """{kernel name: its tensors}: one packing per kernel, shared by its thread variants."""
    packed = {}
    for spec in names:
        kernel, _ = resolve(spec)
        if kernel.name not in packed:
            packed[kernel.name] = kernel.pack(matrix)
    return packed


def _loads(module, x, matrix, packed, names, threads) -> dict:
    """{spec: (bytes read and written, multiply-adds, threads, bytes copied into rows)} of the
    layer on input x, for the cost model: dense reads the fp32 weight, a sparse form its tensors
    (formats.nbytes); a convolution on a sparse kernel first copies its input into rows."""
    out, width = matrix.shape
    rows = _conv_rows(module, x) if isinstance(module, nn.Conv2d) else x.shape[0]
    io = 4 * (x.numel() + rows * out)
    copied = 8 * rows * width if isinstance(module, nn.Conv2d) else 0  # the rows written, then read
    loads = {"dense": (matrix.numel() * matrix.element_size() + io, rows * matrix.numel(), threads, 0)}
    for spec in names:
        parts = packed[resolve(spec)[0].name]
        loads[spec] = (formats.nbytes(parts) + io, rows * parts["values"].numel(),
                       decide.spec_threads(spec, threads), copied)
    return loads


def _conv_rows(conv, x) -> int:
    """Rows of the convolution's unfolded input: batch x output height x output width."""
    size = [(n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip(x.shape[2:], conv.kernel_size, conv.stride, conv.padding, conv.dilation)]
    return x.shape[0] * size[0] * size[1]


def _sample_kernels(module, x, names, packed, rounds, flush=None) -> dict:
    """{spec: [seconds, one per round]} of the layer on its input x, "dense" (the layer itself)
    first; round r times every spec once, so the r-th samples are paired."""
    names = ["dense", *[k for k in names if k != "dense"]]
    bias = None if module.bias is None else module.bias.detach().contiguous()
    weight = module.weight.detach()  # a masked weight's value, computed once: dense runs it as a plain layer
    dense = (lambda: module._conv_forward(x, weight, bias)) if isinstance(module, nn.Conv2d) else \
        (lambda: F.linear(x, weight, bias))
    run = {"dense": dense}
    for spec in names[1:]:
        kernel, threads = resolve(spec)
        bound = kernel.bind(packed[kernel.name], threads)
        run[spec] = (lambda f=bound: conv_apply(f, x, bias, module)) if isinstance(module, nn.Conv2d) else \
            (lambda f=bound: f(x, bias))
    return _interleaved(run, rounds, flush=flush)


def _interleaved(run: dict, rounds, *, flush=None, prepare=None) -> dict:
    """{name: [seconds, one per round]} of each of `run`'s functions, all warmed up first, then
    timed once per round, at least `rounds` rounds and (timed warm) more until SAMPLE_SECONDS
    of run time, up to MAX_ROUNDS. `prepare(name)` and `flush()` come before each call, untimed.
    Interleaved, order rotated: drift in the machine's speed and what the previous call left in
    the caches hit every one alike, and the r-th samples are paired."""
    names = list(run)
    times = {k: [] for k in names}
    with torch.no_grad():
        for k in names:  # warm-up: caches, thread pool, first-call costs
            if prepare is not None:
                prepare(k)
            run[k]()
        r, spent = 0, 0.0
        while r < rounds or (flush is None and r < MAX_ROUNDS and spent < SAMPLE_SECONDS):
            for k in names[r % len(names):] + names[:r % len(names)]:
                if prepare is not None:
                    prepare(k)
                if flush is not None:
                    flush()
                begun = time.perf_counter()
                run[k]()
                times[k].append(time.perf_counter() - begun)
                spent += times[k][-1]
            r += 1
    return times


def _check_model(model, example_inputs, originals, rounds) -> dict:
    """The whole model on the chosen kernels against dense (the original layers swapped back in
    and out), interleaved: {"kept", "speedup" {median, low, high}, "seconds", "reason"}. Kept
    when the sparse model was faster in at least half the paired rounds: the layers were chosen
    one by one, and a model can lose what its layers gained (a thread pool woken between calls,
    one layer's bytes evicting the next one's)."""
    sparse = {name: model.get_submodule(name) for name in originals}
    samples = _sample_models(model, example_inputs, {"dense": originals, "sparse": sparse}, rounds)
    median, low, high = decide.paired(samples["dense"], samples["sparse"])
    shown = decide.show((median, low, high))
    kept = median >= 1
    return {"kept": kept, "speedup": {"median": median, "low": low if low > 0 else None,
                                      "high": high if high < float("inf") else None},
            "seconds": {k: statistics.median(v) for k, v in samples.items()}, "rounds": len(samples["dense"]),
            "reason": f"whole model {shown} faster than dense" if kept else
            f"whole model on these kernels {shown} the speed of dense, not faster: kept dense"}


def _sample_models(model, example_inputs, variants, rounds) -> dict:
    """{variant: [seconds per round]} of whole forwards, each variant's layers ({name: module})
    swapped in before its turn; the last variant's left in."""
    forward = {v: (lambda: _forward(model, example_inputs)) for v in variants}
    times = _interleaved(forward, rounds, prepare=lambda v: _swap_in(model, variants[v]))
    _swap_in(model, variants[list(variants)[-1]])
    return times


def _swap_in(model, modules: dict) -> None:
    for name, module in modules.items():
        model.set_submodule(name, module)


def _forward(model, example_inputs):
    if isinstance(example_inputs, dict):  # keyword arguments (a tokenizer's output)
        return model(**example_inputs)
    return model(*as_inputs(example_inputs))


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
            _forward(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _shared(module, owners) -> bool:
    return len(owners.get(id(stored_weight(module)), [])) > 1
