"""OWL, outlier-weighted layerwise sparsity (Yin et al. 2024).

Blocks whose Wanda scores |W|·‖X‖ hold more outliers (scores above `threshold` times the mean
of the block's scores) keep more weights. With D_i a block's outlier ratio, its density is
2λ·(D_i - min D)/(max D - min D), shifted so that the mean sparsity over blocks is exactly s
(as the paper's code does): the densest and the sparsest block lie 2λ apart, and the model's
sparsity is the target (blocks of equal size). A setting that would push a block outside
[0, 1] is refused rather than clamped (clamping would miss the target). The paper's defaults for LLaMA: threshold
M = 5, λ = 0.08.
"""
import torch

from prunekit.errors import PruneError
from prunekit.llm.methods import wanda_scores


def outlier_ratio(weights: list, stats: list, threshold: float) -> float:
    """Share of a block's Wanda scores above `threshold` times the mean of all the block's scores
    (the OWL code concatenates the block's layers before taking the mean)."""
    scores = torch.cat([wanda_scores(w, s).flatten() for w, s in zip(weights, stats)])
    return float((scores > threshold * scores.mean()).float().mean()) if scores.numel() else 0.0


def owl_sparsities(ratios: list, sparsity: float, spread: float) -> list:
    """Per-block sparsity from the blocks' outlier ratios (see the module docstring)."""
    d = torch.tensor(ratios, dtype=torch.float64)
    width = float(d.max() - d.min())
    if width == 0:
        return [sparsity] * len(ratios)
    density = (d - d.min()) / width * (2 * spread)
    density = density - density.mean() + (1 - sparsity)
    if float(density.min()) < 0 or float(density.max()) > 1:
        raise PruneError(f"owl: sparsity {sparsity:g} with owl_lambda {spread:g} puts a block outside [0, 1] "
                         f"(densities {float(density.min()):.3f} to {float(density.max()):.3f}); lower owl_lambda")
    return [float(1 - x) for x in density]
