"""OWL, outlier-weighted layerwise sparsity (Yin et al. 2024).

Blocks whose Wanda scores |W|·‖X‖ hold more outliers (scores above `threshold` times their
layer's mean) keep more weights. With D_i a block's outlier ratio, its density is
2λ·(D_i - min D)/(max D - min D), shifted so that the mean sparsity over blocks is exactly s
(as the paper's code does): the densest and the sparsest block lie 2λ apart, and the model's
sparsity is the target (blocks of equal size). The paper's defaults for LLaMA: threshold
M = 5, λ = 0.08.
"""
import torch

from prunekit.llm.methods import wanda_scores


def outlier_ratio(weights: list, stats: list, threshold: float) -> float:
    """Share of a block's Wanda scores above `threshold` times the mean of their own layer."""
    outliers, total = 0, 0
    for weight, layer_stats in zip(weights, stats):
        scores = wanda_scores(weight, layer_stats)
        outliers += int((scores > threshold * scores.mean()).sum())
        total += scores.numel()
    return outliers / max(total, 1)


def owl_sparsities(ratios: list, sparsity: float, spread: float) -> list:
    """Per-block sparsity from the blocks' outlier ratios (see the module docstring)."""
    d = torch.tensor(ratios, dtype=torch.float64)
    width = float(d.max() - d.min())
    if width == 0:
        return [sparsity] * len(ratios)
    density = (d - d.min()) / width * (2 * spread)
    density = density - density.mean() + (1 - sparsity)
    return [min(max(float(1 - x), 0.0), 1.0) for x in density]
