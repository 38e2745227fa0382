"""One-shot pruning of one weight matrix W (out, in) given its inputs' statistics.

Each method returns the new W (pruned entries exactly zero) and is registered by name:

- magnitude: the smallest |W| over the whole matrix (the papers' layer-wise baseline);
- wanda: the smallest |W_ij|·‖X_j‖ in each output row (Sun et al. 2023), no weight update;
- sparsegpt: the OBS solver in `sparsegpt.py`, which also updates the kept weights.

With an N:M pattern every method keeps the N best of each M consecutive inputs of a row.
"""
import torch

from prunekit._utils.registry import Registry
from prunekit.llm.sparsegpt import sparsegpt

METHODS = Registry("llm pruning method")


def method(name: str, needs: str):
    """Register a method under `name`; `needs` is what it reads of the inputs: "none" (no
    calibration run), "norms" (‖X_j‖ per input) or "hessian" (X^T X as well)."""
    def wrap(fn):
        fn.needs = needs
        return METHODS.register(name)(fn)
    return wrap


def _drop_lowest_per_row(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask with the k lowest scores of each row dropped (stable: ties go in index order)."""
    if k <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    # A selection (kthvalue) instead of a sort: half the time on an 8B model's matrices, and the
    # same mask as a stable sort, since the ties at the threshold go in index order.
    threshold = scores.kthvalue(k, dim=1, keepdim=True).values
    drop = scores < threshold
    tied = scores == threshold
    drop |= tied & (tied.cumsum(1) <= k - drop.sum(1, keepdim=True))
    return ~drop


def _drop_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask with the k lowest scores of the whole matrix dropped."""
    return _drop_lowest_per_row(scores.reshape(1, -1), k).reshape(scores.shape)


def nm_keep(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask holding the n highest scores of every m consecutive entries of a row."""
    out, cols = scores.shape
    groups = scores.reshape(out, cols // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, torch.argsort(groups, dim=2, descending=True, stable=True)[..., :n], True)
    return keep.reshape(out, cols)


def _mask_by(scores: torch.Tensor, sparsity: float, pattern, per_row: bool) -> torch.Tensor:
    if pattern is not None:
        return nm_keep(scores, *pattern)
    if per_row:
        return _drop_lowest_per_row(scores, round(scores.shape[1] * sparsity))
    return _drop_lowest(scores, round(scores.numel() * sparsity))


@method("magnitude", needs="none")
def magnitude(weight: torch.Tensor, stats, sparsity: float, pattern=None) -> torch.Tensor:
    return weight * _mask_by(weight.abs(), sparsity, pattern, per_row=False)


def wanda_scores(weight: torch.Tensor, stats) -> torch.Tensor:
    """|W_ij|·‖X_j‖: a weight's share of its output's magnitude on the calibration inputs."""
    return weight.abs() * stats.norms().to(weight.device).unsqueeze(0)


@method("wanda", needs="norms")
def wanda(weight: torch.Tensor, stats, sparsity: float, pattern=None) -> torch.Tensor:
    return weight * _mask_by(wanda_scores(weight, stats), sparsity, pattern, per_row=True)


@method("sparsegpt", needs="hessian")
def sparsegpt_method(weight: torch.Tensor, stats, sparsity: float, pattern=None) -> torch.Tensor:
    return sparsegpt(weight, stats.release_hessian(), sparsity, pattern)
