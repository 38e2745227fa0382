"""Ratios between two `measure` results: the five numbers users ask for, plus the
theoretical (MACs) speedup kept apart from the measured one."""
from prunekit.errors import PruneError


def _ratio(numerator, denominator):
    """numerator / denominator; None if either is missing, inf (or 1.0 for 0/0) on zero."""
    if numerator is None or denominator is None:
        return None
    if denominator == 0:
        return 1.0 if numerator == 0 else float("inf")
    return numerator / denominator


def _get(metrics: dict, *path):
    value = metrics
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value


def compare(baseline: dict, pruned: dict) -> dict:
    """compression_ratio, accuracy_retention, speedup, theoretical_speedup, memory_reduction,
    size_reduction, energy_efficiency, energy_method; None where an input is missing."""
    if not isinstance(baseline, dict) or not isinstance(pruned, dict):
        raise PruneError("compare expects two dicts returned by prunekit.measure")
    methods = {_get(baseline, "energy", "method"), _get(pruned, "energy", "method")} - {None}
    energy = _ratio(_get(baseline, "energy", "joules_per_inference"),
                    _get(pruned, "energy", "joules_per_inference"))
    return {
        "compression_ratio": _ratio(_get(baseline, "prunable_params"), _get(pruned, "nonzeros")),
        "accuracy_retention": _ratio(_get(pruned, "accuracy"), _get(baseline, "accuracy")),
        "speedup": _ratio(_get(baseline, "latency", "median_s"), _get(pruned, "latency", "median_s")),
        "theoretical_speedup": _ratio(_get(baseline, "macs"), _get(pruned, "effective_macs")),
        "memory_reduction": _ratio(_get(baseline, "peak_memory"), _get(pruned, "peak_memory")),
        "size_reduction": _ratio(_get(baseline, "size_bytes"), _get(pruned, "size_bytes_compressed")),
        # a RAPL measurement over an estimate means nothing: no ratio across methods
        "energy_efficiency": energy if len(methods) <= 1 else None,
        "energy_method": methods.pop() if len(methods) == 1 else ("mixed" if methods else None),
    }
