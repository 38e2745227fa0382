"""prunekit bench: one model in every deployable form, timed side by side, over batch sizes and
thread counts: latency (median, p10, p90), throughput, peak memory and energy.

Forms: "dense" (the unpruned baseline, when given), "pruned" (the model as given, masks baked
in), "sparse" (pk.to_sparse, the kernels chosen for that batch and thread count), "onnx" (ONNX
Runtime), "int8" (dynamic int8 of the pruned model) and "dense-int8" (of the baseline), so that
int8's effect is seen apart from sparsity's. All forms of one (batch, threads) cell are timed
in one interleaved loop. Energy is RAPL where the machine exposes it; otherwise the labelled
Horowitz estimate, for the eager forms only (it models weights and MACs, not kernels).
"""
import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from prunekit.deploy.choose import to_sparse
from prunekit.deploy.int8 import quantize_int8
from prunekit.deploy.onnx import OnnxModule, export_onnx
from prunekit.errors import PruneError
from prunekit.masks import make_permanent
from prunekit.measure import _run
from prunekit.measure.energy import energy_of, measured
from prunekit.measure.latency import time_models
from prunekit.measure.macs import layer_stats
from prunekit.measure.memory import peak_memory

FORMS = ("dense", "pruned", "sparse", "onnx", "int8", "dense-int8")


def bench(model: nn.Module, sample_shape, *, baseline: nn.Module | None = None, batches=(1, 32),
          threads=(1, 2), forms=FORMS, repeats: int = 30, warmup: int = 3) -> list:
    """[{form, batch, threads, latency {median_s, p10_s, p90_s}, throughput, peak_memory,
    energy, speedup (vs dense, or vs pruned without a baseline)}], one row per form and cell; the
    "sparse" rows also hold `choice`: each layer's kernel and why (pk.to_sparse's report)."""
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        raise PruneError(f"unknown form {unknown[0]!r}: choose from {', '.join(FORMS)}")
    if baseline is None:
        forms = [f for f in forms if f not in ("dense", "dense-int8")]
    pruned = make_permanent(copy.deepcopy(model)).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        if "onnx" in forms:
            export_onnx(pruned, torch.randn(1, *sample_shape), onnx_path)
        for count in threads:
            for batch in batches:
                x = torch.randn(batch, *sample_shape, generator=torch.Generator().manual_seed(0))
                built = _build(forms, pruned, baseline, x, count, onnx_path)
                rows += _cell(built, x, count, repeats, warmup)
    return rows


def _build(forms, pruned, baseline, x, threads, onnx_path) -> dict:
    built = {}
    with _run.threads(threads):
        for form in forms:
            if form == "dense":
                built[form] = baseline.eval()
            elif form == "pruned":
                built[form] = pruned
            elif form == "sparse":
                built[form] = to_sparse(copy.deepcopy(pruned), x)
            elif form == "onnx":
                built[form] = OnnxModule(onnx_path, threads)
            elif form == "int8":
                built[form] = quantize_int8(pruned)
            else:
                built[form] = quantize_int8(baseline)
    return built


def _cell(built, x, threads, repeats, warmup) -> list:
    times = time_models(built, (x,), repeats=repeats, warmup=warmup, threads=threads)
    reference = "dense" if "dense" in built else "pruned"
    rows = []
    with _run.threads(threads):
        for form, model in built.items():
            t = times[form]
            rows.append({"form": form, "batch": x.shape[0], "threads": threads,
                         "latency": {k: t[k] for k in ("median_s", "p10_s", "p90_s")},
                         "throughput": x.shape[0] / t["median_s"],
                         "speedup": times[reference]["median_s"] / t["median_s"] if reference in times else None,
                         "peak_memory": None if form == "onnx" else peak_memory(model, (x,)),
                         "energy": _energy(form, model, x, repeats)})
            if form == "sparse":
                rows[-1]["choice"] = _choice(model)
    return rows


def _choice(model) -> dict:
    """What pk.to_sparse chose for the cell, and why: {"layers": {layer: {kernel, prior_kernel,
    reason}}, "model": the whole-model check}."""
    report = getattr(model, "to_sparse_report", None) or {"layers": {}, "model": None}
    return {"layers": {name: {k: row[k] for k in ("kernel", "prior_kernel", "reason")}
                       for name, row in report["layers"].items()}, "model": report["model"]}


def _energy(form, model, x, repeats):
    if form in ("dense", "pruned"):
        return energy_of(model, (x,), layer_stats(model, (x,)), repeats)
    return measured(model, (x,), repeats)  # None where RAPL is unreadable: no estimate for kernels
