"""Adaptive hybrid pruning: per channel space, remove channels or mask weights, whichever
costs less validation accuracy for the same weights removed (as many zeroed in each tensor
the channels run through: producers and consumers alike); then magnitude pruning of what
is left, up to the target.

The cost model is the one this machine shows (README, realized speedup): removing channels
makes dense kernels faster, masking weights does not. So channel removal is chosen unless it
costs more than `tolerance` validation accuracy beyond masking the same number of weights.
"""
import copy
from dataclasses import dataclass, field

import torch

from prunekit._utils.inputs import as_inputs
from prunekit.errors import PruneError
from prunekit.graph import analyze
from prunekit.masks import sparsity as masks_sparsity
from prunekit.search.channels import apply_ratios
from prunekit.targets import prunable_count
from prunekit.unstructured.magnitude import prune_rest


@dataclass
class AdaptiveReport:
    choices: dict = field(default_factory=dict)   # {space name: "structured" | "unstructured"}
    trials: dict = field(default_factory=dict)    # {space name: (structured value, unstructured value)}
    sparsity: float = 0.0                          # of the prunable weights, in the end


def _trial(model, inputs, space, ratio, evaluate):
    """(value with `ratio` of this space's channels removed, value with as many weights masked
    instead). Removing channels takes rows of the producers and columns of the consumers
    (and of an Embedding, or of a weight passed to F.linear); the masked trial zeroes, in
    each of those same tensors, as many of its smallest-magnitude entries: the same weights'
    worth from the same tensors, so only the pattern differs between the two trials."""
    structured = copy.deepcopy(model)
    apply_ratios(structured, inputs, {space.name: ratio})
    left = {name: weight.numel() for name, weight in _weights(structured)}
    masked = copy.deepcopy(model)
    for name, weight in _weights(masked):
        _zero_smallest(weight, weight.numel() - left.get(name, weight.numel()))
    return evaluate(structured), evaluate(masked)


def _weights(model):
    """(name, tensor) of every weight matrix or kernel (2-D or more), whatever module holds it;
    biases and norm scales are not weights here, as in the sparsity reported."""
    return [(name, p) for name, p in model.named_parameters() if p.dim() >= 2]


@torch.no_grad()
def _zero_smallest(weight, count):
    if count > 0:  # a stable sort: ties go the same way every run
        chosen = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
        chosen[weight.abs().flatten().argsort(stable=True)[:count]] = True
        weight.masked_fill_(chosen.view_as(weight), 0)


def adaptive_hybrid(model, example_inputs, sparsity, evaluate, *, ratio=0.5, tolerance=0.002) -> AdaptiveReport:
    """Prune `model` in place to `sparsity` of its prunable weights: each channel space loses
    `ratio` of its channels if that costs at most `tolerance` more `evaluate` (validation
    accuracy) than masking as many weights in the same tensors; magnitude pruning does the rest."""
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
