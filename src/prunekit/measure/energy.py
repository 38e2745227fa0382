"""Energy per inference: measured from Intel RAPL counters where the machine exposes them,
otherwise estimated from Horowitz's 45 nm figures (ISSCC 2014), clearly labelled.

The estimate models an idealised sparse engine that skips zero weights, as Han et al.
(2015, 2016) assume: it is an upper bound on what sparsity can save, not what a CPU
running dense kernels saves. Only measured latency and RAPL tell you that.
"""
import glob
import logging
import os
import time

from torch import nn

from prunekit.measure import _run

log = logging.getLogger(__name__)

RAPL_GLOB = "/sys/class/powercap/intel-rapl:*"
PJ_MULT, PJ_ADD = 3.7, 0.9       # 32-bit float multiply / add
PJ_DRAM, PJ_SRAM = 640.0, 5.0    # 32-bit DRAM read / SRAM read (32 KB)
ESTIMATE_NOTE = "estimate (Horowitz 45nm; assumes zero weights are skipped)"
_MIN_SECONDS = 0.2               # RAPL updates about every millisecond; run long enough


def _rapl_zones() -> list:
    """Top-level package zones only (intel-rapl:N): sub-zones (intel-rapl:N:M, core/dram)
    are already included in their package and would be counted twice."""
    zones = []
    for path in sorted(glob.glob(RAPL_GLOB)):
        if os.path.basename(path).count(":") != 1:
            continue
        try:
            with open(os.path.join(path, "energy_uj")) as f:
                int(f.read())
            with open(os.path.join(path, "max_energy_range_uj")) as f:
                zones.append((path, int(f.read())))
        except (OSError, ValueError):
            continue
    return zones


def _read(zones) -> list:
    values = []
    for path, _ in zones:
        with open(os.path.join(path, "energy_uj")) as f:
            values.append(int(f.read()))
    return values


def _joules(zones, before, after) -> float:
    """Energy between two readings; a counter that went down wrapped at max_energy_range_uj."""
    total_uj = 0
    for (_, max_range), b, a in zip(zones, before, after):
        total_uj += a - b if a >= b else a + max_range - b
    return total_uj * 1e-6


def measured(model: nn.Module, inputs: tuple, repeats: int):
    """{"joules_per_inference", "method": "rapl", "note"} or None when RAPL is unreadable."""
    zones = _rapl_zones()
    if not zones:
        return None
    with _run.inference(model):
        _run.forward(model, inputs)  # warm-up outside the measured window
        runs, before, start = 0, _read(zones), time.perf_counter()
        while runs < repeats or time.perf_counter() - start < _MIN_SECONDS:
            _run.forward(model, inputs)
            runs += 1
        _run.sync(inputs)
        after = _read(zones)
    batch = _run.batch_size(inputs)
    joules = _joules(zones, before, after) / (runs * max(batch, 1))
    return {"joules_per_inference": joules, "method": "rapl", "batch_size": batch,
            "note": f"RAPL package energy over {runs} forwards of batch {batch}, per sample; "
                    "includes everything else the CPU package did meanwhile"}


def _layer_picojoules(s: dict) -> float:
    """One layer: arithmetic on effective MACs, weight fetch from DRAM (dense, or nonzeros +
    bitmask when that form is smaller), input activations read from SRAM."""
    density = s["nonzeros"] / s["numel"] if s["numel"] else 0.0
    compute = s["macs"] * density * (PJ_MULT + PJ_ADD)
    words = s["itemsize"] / 4  # costs are per 32-bit word
    dense_words = s["numel"] * words
    sparse_words = s["nonzeros"] * words + s["numel"] / 32  # bitmask: one bit per weight
    fetch = min(dense_words, sparse_words) * PJ_DRAM
    return compute + fetch + s["input_elems"] * PJ_SRAM


def estimate(stats: list, batch: int) -> dict:
    """Horowitz-model energy per sample for one forward's per-layer stats (see macs.layer_stats)."""
    joules = sum(_layer_picojoules(s) for s in stats) * 1e-12 / max(batch, 1)
    return {"joules_per_inference": joules, "method": "estimate", "batch_size": batch,
            "note": f"{ESTIMATE_NOTE}; per sample of a batch of {batch}, weights fetched once per batch"}


def energy_of(model: nn.Module, inputs: tuple, stats: list, repeats: int) -> dict:
    """RAPL measurement when available, else the estimate."""
    result = measured(model, inputs, repeats)
    if result is None:
        log.debug("RAPL counters not readable; using the Horowitz 45nm estimate")
        result = estimate(stats, _run.batch_size(inputs))
    return result
