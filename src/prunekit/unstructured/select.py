"""Scores -> masks at any scale.

`prune_lowest` finds the exact k lowest-scoring elements across many tensors without
`torch.quantile` (which refuses more than 16M elements) and without concatenating a float
copy of all weights. It is a two-level radix select over 32-bit order-preserving keys:
one histogram pass over the high 16 bits, one over the low 16 bits inside the chosen
bucket, one pass writing masks. Scores are recomputed chunk by chunk in each pass, so the
only memory that grows with the model is the boolean output mask (1 byte per weight).

Ties at the cut are broken deterministically: the first ones in source order, then flat
index order, are pruned. Already-dead elements (alive == False) rank below everything,
so a new target counts the zeros that are already there.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch

CHUNK = 1 << 18  # small enough to stay in cache and out of the page-fault path of big allocations
_BINS = 1 << 16


@dataclass
class Source:
    """One tensor to select from: its size, a chunked score function, and who is alive."""
    numel: int
    scores: Callable[[int, int], torch.Tensor]  # (start, stop) -> float32 scores, 1-D
    alive: Optional[torch.Tensor] = None        # flat bool, True = not yet pruned


def _chunks(numel: int):
    for start in range(0, numel, CHUNK):
        yield start, min(start + CHUNK, numel)


def _keys(source: Source, start: int, stop: int) -> torch.Tensor:
    """int32 keys that order like the float32 scores (sign-magnitude -> two's complement)."""
    bits = source.scores(start, stop).to(torch.float32).contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFF_FFFF)


def _alive(source: Source, start: int, stop: int):
    return None if source.alive is None else source.alive[start:stop]


def _histogram(sources, high_bin=None) -> torch.Tensor:
    """Counts of alive keys' high 16 bits, or of their low 16 bits within `high_bin`."""
    hist = torch.zeros(_BINS, dtype=torch.int64)
    for source in sources:
        for start, stop in _chunks(source.numel):
            keys, alive = _keys(source, start, stop), _alive(source, start, stop)
            high = (keys >> 16) + _BINS // 2
            if high_bin is None:
                values = high if alive is None else high[alive]
            else:
                chosen = high == high_bin if alive is None else (high == high_bin) & alive
                values = keys[chosen] & (_BINS - 1)
            hist += torch.bincount(values, minlength=_BINS)
    return hist


def _cut(hist: torch.Tensor, k: int):
    """(bin holding the k-th smallest, number of elements in bins below it)."""
    cumulative = hist.cumsum(0)
    b = int(torch.searchsorted(cumulative, torch.tensor(k)))
    return b, int(cumulative[b - 1]) if b > 0 else 0


def _threshold_key(sources, k: int):
    """(key T of the k-th smallest alive element, how many alive keys equal to T to prune)."""
    high, below_high = _cut(_histogram(sources), k)
    low, below_low = _cut(_histogram(sources, high_bin=high), k - below_high)
    return ((high - _BINS // 2) << 16) | low, k - below_high - below_low


def prune_lowest(sources: list, k: int) -> list:
    """Keep-masks (flat bool) per source with max(k, dead) elements pruned in all.

    Dead elements count first; the remaining k - dead are the lowest-scoring alive ones.
    """
    total = sum(s.numel for s in sources)
    if not 0 <= k <= total:
        raise ValueError(f"k={k} outside [0, {total}]")
    masks = [torch.ones(s.numel, dtype=torch.bool) if s.alive is None else s.alive.clone()
             for s in sources]
    k -= sum(m.numel() - int(torch.count_nonzero(m)) for m in masks)
    if k <= 0:
        return masks
    key_t, ties = _threshold_key(sources, k)
    for source, mask in zip(sources, masks):
        for start, stop in _chunks(source.numel):
            keys = _keys(source, start, stop)
            prune = keys < key_t
            if ties > 0:
                equal = keys == key_t
                if source.alive is not None:
                    equal &= source.alive[start:stop]
                n_equal = int(torch.count_nonzero(equal))
                if n_equal:
                    prune |= equal & (equal.cumsum(0) <= ties)
                    ties -= min(ties, n_equal)
            mask[start:stop] &= ~prune
    return masks


def prune_below(source: Source, threshold: float) -> torch.Tensor:
    """Keep-mask (flat bool): elements scoring below `threshold` are pruned, dead stay dead."""
    mask = torch.ones(source.numel, dtype=torch.bool) if source.alive is None else source.alive.clone()
    for start, stop in _chunks(source.numel):
        mask[start:stop] &= source.scores(start, stop) >= threshold
    return mask


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask keeping the `n` highest of every `m` consecutive scores along the last dim
    (whose size must be a multiple of m). Ties: the first in order are kept."""
    groups = scores.reshape(-1, m)
    order = torch.argsort(groups, dim=1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    return keep.reshape(scores.shape)
