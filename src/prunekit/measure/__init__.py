"""Measure a model, and compare two measurements: counts, MACs, size, latency, peak memory,
energy, accuracy. Every forward runs under eval() + no_grad; the model is left as it was
(training flags, hooks, thread count), also when something fails."""
import logging

from torch import nn

from prunekit._utils.inputs import as_inputs
from prunekit._utils.validate import check_count
from prunekit.measure import _run
from prunekit.measure.accuracy import top1
from prunekit.measure.counts import count_params, sizes
from prunekit.measure.energy import energy_of
from prunekit.measure.latency import time_models
from prunekit.measure.macs import layer_stats, totals
from prunekit.measure.memory import peak_memory
from prunekit.measure.ratios import compare
from prunekit.targets import prunable_modules

log = logging.getLogger(__name__)

__all__ = ["measure", "compare", "time_models", "prunable_modules"]


def measure(model: nn.Module, example_inputs, *, data=None, latency: bool = True,
            repeats: int = 30, warmup: int = 5, threads=None) -> dict:
    """params, prunable_params, nonzeros, params_nonzero, sparsity, macs, effective_macs,
    theoretical_speedup_vs_dense, size_bytes, size_bytes_compressed, peak_memory, energy,
    and latency (if `latency`) and accuracy (if `data`, an iterable of (x, y) batches)."""
    _run.check_model(model)
    inputs = as_inputs(example_inputs, tensors_only=True)
    check_count("repeats", repeats, 1)
    check_count("warmup", warmup, 0)
    if threads is not None:
        check_count("threads", threads, 1)
    with _run.threads(threads):
        stats = layer_stats(model, inputs)  # the first forward: a broken model fails here
        result = {**count_params(model), **totals(stats), **sizes(model)}
        if latency:
            result["latency"] = time_models({"model": model}, inputs, repeats=repeats,
                                            warmup=warmup, threads=threads)["model"]
        result["peak_memory"] = peak_memory(model, inputs)
        result["energy"] = energy_of(model, inputs, stats, repeats)
        if data is not None:
            result["accuracy"] = top1(model, data)
    log.debug("measured %s: %s", type(model).__name__,
              {k: v for k, v in result.items() if not isinstance(v, dict)})
    return result
