"""Unstructured magnitude pruning: pk.prune_magnitude."""
import hashlib
import logging
import math
from dataclasses import dataclass, field

import torch

from prunekit import masks
from prunekit._utils.validate import check_range
from prunekit.criteria import get_elementwise
from prunekit.errors import PruneError
from prunekit.targets import prunable_count, select_modules
from prunekit.unstructured import select

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    """What a pruning call did: achieved sparsity over the selected weights, per layer too."""
    sparsity: float
    pruned: int
    total: int
    layers: dict = field(default_factory=dict)  # name -> {"params", "zeros", "sparsity"}
    skipped: list = field(default_factory=list)  # selected layers left unpruned, and why in the log


# Random scores are drawn in fixed blocks of this many weights, whatever select.CHUNK is;
# equal to its default, so a chunk is one block and costs no more than before.
_BLOCK = 1 << 18


def layer_seed(seed, name, shape) -> int:
    """A seed from (seed, layer name, shape) alone: a layer's random scores do not depend on
    which other layers are selected. sha256, as Python's hash() of a str changes per process."""
    key = f"{seed}/{name}/{tuple(shape)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _source(name, module, score_fn, seed, is_builtin):
    raw = masks.raw_tensor(module).detach()
    flat = raw.reshape(-1)
    mask = masks.get_mask(module)
    alive = None if mask is None else mask.reshape(-1)
    if not is_builtin:  # a user callable sees the whole tensor once; its scores are held
        whole = score_fn(raw, None)
        if not isinstance(whole, torch.Tensor) or whole.numel() != flat.numel():
            raise PruneError(f"criterion must return one score per weight ({flat.numel()}), got "
                             f"{tuple(whole.shape) if isinstance(whole, torch.Tensor) else type(whole).__name__}")
        whole = whole.detach().reshape(-1).to(torch.float32)
        return select.Source(flat.numel(), lambda a, b: whole[a:b], alive)
    base = layer_seed(seed, name, raw.shape)

    def scores(start, stop):
        # One generator per fixed block, seeded by the layer and the block's position: the same
        # scores for any chunking, computed in any order.
        first = start - start % _BLOCK
        parts = [score_fn(flat[b:min(b + _BLOCK, flat.numel())],
                          torch.Generator().manual_seed((base + b // _BLOCK) & 0x7FFF_FFFF_FFFF_FFFF))
                 for b in range(first, stop, _BLOCK)]
        return (parts[0] if len(parts) == 1 else torch.cat(parts))[start - first:stop - first]
    return select.Source(flat.numel(), scores, alive)


def _distinct(chosen):
    """One (name, module) per weight tensor, ranked once; {name: [(name, module)] sharing it}."""
    first, sharers = {}, {}
    for name, module in chosen:
        key = id(masks.raw_tensor(module))
        if key in first:
            sharers[first[key]].append((name, module))
        else:
            first[key], sharers[name] = name, []
    return [(n, m) for n, m in chosen if n in sharers], sharers


def _report(chosen, new_masks, total):
    """Zeros as the model now has them: masked weights and weights that were already 0."""
    layers, zeros = {}, 0
    for (name, module), mask in zip(chosen, new_masks):
        z = _zeros(masks.raw_tensor(module).detach().reshape(-1), mask.reshape(-1))
        layers[name] = {"params": mask.numel(), "zeros": z, "sparsity": z / mask.numel() if mask.numel() else 0.0}
        zeros += z
    return PruneReport(sparsity=zeros / total if total else 0.0, pruned=zeros, total=total, layers=layers)


def _zeros(flat_weight, flat_mask, chunk=1 << 22):
    """Entries that are zero in weight * mask, read in chunks (no full-size temporary)."""
    alive = 0
    for start in range(0, flat_weight.numel(), chunk):
        stop = start + chunk
        alive += int(torch.count_nonzero(flat_weight[start:stop].ne(0) & flat_mask[start:stop]))
    return flat_weight.numel() - alive


def _check_finite(name, weight, chunk=1 << 22):
    """NaN or inf weights cannot be ranked by magnitude (a diverged run); read in chunks, so a
    1B-weight layer costs no full-size temporary."""
    flat = weight.detach().reshape(-1)
    for start in range(0, flat.numel(), chunk):
        if not bool(torch.isfinite(flat[start:start + chunk]).all()):
            raise PruneError(f"weights of {name or 'the model'} contain NaN or inf (did training diverge?): "
                             "they cannot be ranked by magnitude")


def prune_rest(model, sparsity, dense_count, seed=None) -> None:
    """Global magnitude pruning of what is left, so that `sparsity` of the `dense_count`
    prunable weights the model had before (channels already removed count) are gone."""
    remaining, target_nonzero = prunable_count(model), (1 - sparsity) * dense_count
    if remaining > target_nonzero:
        prune_magnitude(model, 1 - target_nonzero / remaining, scope="global", seed=seed)


def prune_magnitude(model, sparsity=None, *, threshold=None, scope="global", criterion="l1",
                    include=None, exclude=None, seed=None) -> PruneReport:
    """Mask the lowest-scoring weights of Linear/ConvNd layers.

    sparsity: fraction of the selected weights to be zero afterwards (exactly round(s*N),
    counting weights already masked); or threshold: prune weights scoring below it.
    scope: "global" ranks all selected tensors together, "layer" prunes each to `sparsity`.
    """
    if (sparsity is None) == (threshold is None):
        raise PruneError("give exactly one of sparsity= (a fraction) or threshold= (a score)")
    if sparsity is not None:
        sparsity = check_range("sparsity", sparsity, 0, 1)
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise PruneError(f"threshold must be a finite number, got {threshold!r}")
    if scope not in ("global", "layer"):
        raise PruneError(f"scope must be 'global' or 'layer', got {scope!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise PruneError(f"seed must be an int or None, got {seed!r}")
    score_fn = get_elementwise(criterion)
    chosen, sharers = _distinct(select_modules(model, include, exclude))
    for name, module in chosen:
        _check_finite(name, masks.raw_tensor(module))
    sources = [_source(n, m, score_fn, seed or 0, not callable(criterion)) for n, m in chosen]

    # Decide every mask first; only then touch the model, so a failure leaves it unchanged.
    if threshold is not None:
        new_masks = [select.prune_below(s, float(threshold)) for s in sources]
    elif scope == "global":
        new_masks = select.prune_lowest(sources, round(sparsity * sum(s.numel for s in sources)))
    else:
        new_masks = [select.prune_lowest([s], round(sparsity * s.numel))[0] for s in sources]
    for (name, module), mask in zip(chosen, new_masks):
        shaped = mask.view(masks.raw_tensor(module).shape)
        for user in (module, *(m for _, m in sharers[name])):  # a shared weight: one mask for every user
            masks.attach(user, shaped)
    report = _report(chosen, new_masks, sum(s.numel for s in sources))
    for name in list(report.layers):  # every layer sharing a weight shows its figures
        for other, _ in sharers[name]:
            report.layers[other] = report.layers[name]
    if sparsity is not None and scope == "global" and report.sparsity > sparsity + 0.5 / max(report.total, 1):
        log.warning("sparsity %.4f is below the %.4f already masked: masks only ever grow, nothing was "
                    "unpruned", sparsity, report.sparsity)
    log.info("magnitude pruning (%s, %s): %d of %d weights zero (%.2f%%)", scope, criterion,
             report.pruned, report.total, 100 * report.sparsity)
    return report
