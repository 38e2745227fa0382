"""SparseGPT (Frantar & Alistarh 2023): prune a weight matrix and update the weights it keeps
so that the layer's output on the calibration inputs moves as little as possible.

Columns are processed left to right in blocks of 128 ("lazy batch updates"); in each block the
mask is chosen by w²/[H⁻¹]_jj² (the OBS saliency), each pruned column's error is spread over
the columns to its right through the upper Cholesky factor of H⁻¹, and the block's
accumulated error updates the rest of the matrix at once.

Numerical robustness (the reference code and llm-compressor fall back to an identity Hessian
with a warning): the damping starts at 1 % of the mean diagonal; where a Cholesky factorisation
fails or the result is not finite, the damping is multiplied by 10 and the layer solved again,
up to a damping of 10x the mean diagonal; past that the call fails. The damping used is logged
when it had to grow.
"""
import logging

import torch

from prunekit.errors import PruneError

log = logging.getLogger(__name__)

BLOCK = 128
DAMP = 0.01
MAX_DAMP = 10.0


def _upper_inverse_factor(hessian: torch.Tensor, damp: float):
    """Upper Cholesky factor of (H + damp·mean(diag H)·I)⁻¹, or None where it does not exist.
    At most two (in × in) matrices besides H live at once: an 8B model's FFN output layer has
    14336 inputs, 0.8 GB a matrix."""
    damped = hessian.clone()
    damped.diagonal().add_(damp * hessian.diagonal().mean())
    lower, info = torch.linalg.cholesky_ex(damped)
    del damped
    if int(info) != 0:
        return None
    inverse = torch.cholesky_inverse(lower)
    del lower
    upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
    return None if int(info) != 0 else upper


def _block_mask(w: torch.Tensor, d: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune-mask of the round(numel·sparsity) lowest w²/d² of a column block (unstructured)."""
    saliency = (w.pow(2) / d.pow(2).unsqueeze(0)).flatten()
    prune = torch.zeros_like(saliency, dtype=torch.bool)
    k = round(saliency.numel() * sparsity)
    if k > 0:
        prune[torch.argsort(saliency, stable=True)[:k]] = True
    return prune.reshape(w.shape)


def _solve_block(w1, hinv1, sparsity, pattern):
    """(pruned block Q1, its scaled errors Err1) for one column block, columns left to right."""
    count = w1.shape[1]
    q1, err1 = torch.zeros_like(w1), torch.zeros_like(w1)
    prune = _block_mask(w1, hinv1.diagonal(), sparsity) if pattern is None else torch.zeros_like(w1, dtype=torch.bool)
    for i in range(count):
        if pattern is not None and i % pattern[1] == 0:
            n, m = pattern
            group = w1[:, i:i + m].pow(2) / hinv1.diagonal()[i:i + m].pow(2).unsqueeze(0)
            lowest = torch.argsort(group, dim=1, stable=True)[:, :m - n]
            prune[:, i:i + m].scatter_(1, lowest, True)
        w, d = w1[:, i], hinv1[i, i]
        q = w.masked_fill(prune[:, i], 0.0)
        q1[:, i] = q
        err = (w - q) / d
        w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
        err1[:, i] = err
    return q1, err1


def _solve(weight, hinv, sparsity, pattern):
    w = weight.clone()
    cols = w.shape[1]
    block = BLOCK if pattern is None else pattern[1] * max(1, BLOCK // pattern[1])  # groups never straddle blocks
    for start in range(0, cols, block):
        stop = min(start + block, cols)
        q1, err1 = _solve_block(w[:, start:stop].clone(), hinv[start:stop, start:stop], sparsity, pattern)
        w[:, start:stop] = q1
        w[:, stop:] -= err1 @ hinv[start:stop, stop:]
    return w


def sparsegpt(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, pattern=None) -> torch.Tensor:
    """The pruned and updated (out, in) matrix; `hessian` is X^T X / tokens (in, in), only read."""
    weight, hessian = weight.float().clone(), hessian.float()
    dead = hessian.diagonal() == 0  # inputs that are always zero: their weights do nothing
    if bool(dead.any()):
        hessian = hessian.clone()
        hessian[dead, dead] = 1.0
        weight[:, dead] = 0.0
    damp = DAMP
    while damp <= MAX_DAMP:
        hinv = _upper_inverse_factor(hessian, damp)
        if hinv is not None and bool(torch.isfinite(hinv).all()):
            result = _solve(weight, hinv, sparsity, pattern)
            if bool(torch.isfinite(result).all()):
                if damp != DAMP:
                    log.info("sparsegpt: damping raised to %g of the mean diagonal", damp)
                return result
        damp *= 10
    raise PruneError(f"sparsegpt: the Hessian ({hessian.shape[0]} inputs) stays singular or gives "
                     f"non-finite weights up to a damping of {MAX_DAMP:g}x its mean diagonal")
