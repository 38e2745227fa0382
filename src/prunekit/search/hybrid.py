"""Adaptive hybrid pruning: per channel space, remove channels or mask weights, whichever
costs less validation accuracy for the same weights removed; then magnitude pruning of what
is left, up to the target.

The cost model is the one this machine shows (README, realized speedup): removing channels
makes dense kernels faster, masking weights does not. So channel removal is chosen unless it
costs more than `tolerance` validation accuracy beyond masking the same number of weights.
"""
import copy
import re
from dataclasses import dataclass, field

from prunekit.search.channels import apply_ratios
from prunekit.errors import PruneError
from prunekit.graph import analyze
from prunekit.unstructured.magnitude import prune_magnitude, prune_rest
from prunekit.masks import sparsity as masks_sparsity
from prunekit.targets import prunable_count
from prunekit._utils.inputs import as_inputs


@dataclass
class AdaptiveReport:
    choices: dict = field(default_factory=dict)   # {space name: "structured" | "unstructured"}
    trials: dict = field(default_factory=dict)    # {space name: (structured value, unstructured value)}
    sparsity: float = 0.0                          # of the prunable weights, in the end


def _trial(model, inputs, space, ratio, evaluate):
    """(value with this space's channels removed, value with as many weights masked instead)."""
    structured = copy.deepcopy(model)
    apply_ratios(structured, inputs, {space.name: ratio})
    removed = prunable_count(model) - prunable_count(structured)
    masked = copy.deepcopy(model)
    layers = [f"^{re.escape(m)}$" for m in space.modules]
    selected = sum(masked.get_submodule(m).weight.numel() for m in space.modules)
    prune_magnitude(masked, min(removed / selected, 1.0), scope="global", include=layers)
    return evaluate(structured), evaluate(masked)


def adaptive_hybrid(model, example_inputs, sparsity, evaluate, *, ratio=0.5, tolerance=0.002) -> AdaptiveReport:
    """Prune `model` in place to `sparsity` of its prunable weights: each channel space loses
    `ratio` of its channels if that costs at most `tolerance` more `evaluate` (validation
    accuracy) than masking as many of its weights; magnitude pruning does the rest."""
    if not 0 < sparsity < 1:
        raise PruneError(f"sparsity must be in (0, 1), got {sparsity!r}")
    inputs = as_inputs(example_inputs)
    report, chosen = AdaptiveReport(), {}
    for space in analyze(model, inputs).spaces:
        with_channels, with_masks = _trial(model, inputs, space, ratio, evaluate)
        report.trials[space.name] = (with_channels, with_masks)
        structured = with_channels >= with_masks - tolerance
        report.choices[space.name] = "structured" if structured else "unstructured"
        if structured:
            chosen[space.name] = ratio
    dense = prunable_count(model)
    if chosen:
        apply_ratios(model, inputs, chosen)
    prune_rest(model, sparsity, dense)
    counts = masks_sparsity(model)["global"]
    report.sparsity = 1 - (counts["params"] - counts["zeros"]) / dense
    return report
