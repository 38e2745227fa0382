"""Measured latency. Speedups are only honest when models are timed side by side:
one process, warm-up first, interleaved rounds (so drift in clock speed, cache state or
background load hits every model alike), a fixed thread count, and the median reported."""
import logging
import statistics
import time

from torch import nn

from prunekit._utils.inputs import as_inputs
from prunekit._utils.validate import check_count
from prunekit.errors import PruneError
from prunekit.measure import _run

log = logging.getLogger(__name__)


def _summary(samples: list, threads: int, batch: int) -> dict:
    ordered = sorted(samples)
    if len(ordered) > 1:
        p25, _, p75 = statistics.quantiles(ordered, n=4, method="inclusive")
        tenths = statistics.quantiles(ordered, n=10, method="inclusive")
        p10, p90 = tenths[0], tenths[-1]
    else:
        p10 = p25 = p75 = p90 = ordered[0]
    return {"median_s": statistics.median(ordered), "p10_s": p10, "p25_s": p25, "p75_s": p75, "p90_s": p90,
            "min_s": ordered[0], "repeats": len(ordered), "threads": threads, "batch_size": batch}


def _check(models, repeats, warmup, threads):
    if not isinstance(models, dict) or not models:
        raise PruneError("models must be a non-empty dict {name: nn.Module}")
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise PruneError(f"models[{name!r}] is a {type(model).__name__}, not an nn.Module")
    check_count("repeats", repeats, 1)
    check_count("warmup", warmup, 0)
    if threads is not None:
        check_count("threads", threads, 1)


def time_models(models: dict, example_inputs, *, repeats: int = 30, warmup: int = 5,
                threads=None) -> dict:
    """{name: {median_s, p25_s, p75_s, min_s, repeats, threads, batch_size}} for each model,
    all timed in one interleaved loop (round r runs every model once, order rotated)."""
    _check(models, repeats, warmup, threads)
    inputs = as_inputs(example_inputs, tensors_only=True)
    names = list(models)
    samples = {name: [] for name in names}
    with _run.threads(threads) as used, _run.inference(*models.values()):
        for _ in range(warmup):
            for name in names:
                _run.forward(models[name], inputs)
        _run.sync(inputs)
        for r in range(repeats):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                _run.forward(models[name], inputs)
                _run.sync(inputs)
                samples[name].append(time.perf_counter() - start)
    batch = _run.batch_size(inputs)
    log.debug("timed %d models x %d repeats on %d threads", len(names), repeats, used)
    return {name: _summary(samples[name], used, batch) for name in names}
