"""N:M semi-structured pruning (pk.prune_nm): in every group of M consecutive weights along
a layer's input dimension, exactly the N highest-scoring are kept (2:4 is what sparse tensor
cores run). For a conv weight (out, in, *kernel) the groups run along `in` at each kernel
position, as NVIDIA's ASP lays them out."""
import logging

import torch
from torch.nn.modules.conv import _ConvTransposeNd

from prunekit import masks
from prunekit._utils.validate import check_count
from prunekit.criteria import get_elementwise
from prunekit.errors import PruneError
from prunekit.targets import select_modules
from prunekit.unstructured.magnitude import PruneReport, layer_seed
from prunekit.unstructured.select import nm_mask

log = logging.getLogger(__name__)


def _check(n, m):
    for name, value in (("n", n), ("m", m)):
        check_count(name, value, 1)
    if n >= m:
        raise PruneError(f"N:M needs n < m (n of every m weights kept), got {n}:{m}")


def input_dim(module) -> int:
    """The weight dimension that runs over the layer's inputs (ConvTranspose stores it first)."""
    return 0 if isinstance(module, _ConvTransposeNd) else 1


def _layer_mask(module, score_fn, n, m, seed):
    raw, dim = masks.raw_tensor(module).detach(), input_dim(module)
    scores = score_fn(raw, torch.Generator().manual_seed(seed)).to(torch.float32)
    return nm_mask(scores.movedim(dim, -1).contiguous(), n, m).movedim(-1, dim)


def prune_nm(model, n=2, m=4, *, criterion="l1", include=None, exclude=None) -> PruneReport:
    """Mask every selected Linear/Conv weight to an exact N:M pattern along its inputs.

    Layers whose input width is not a multiple of m (a first conv on 1 or 3 channels)
    cannot hold the pattern; they are left dense and listed in `report.skipped`. Masks
    compose with existing ones (AND), so a group may end with fewer than n nonzeros.
    """
    _check(n, m)
    score_fn = get_elementwise(criterion)
    chosen = select_modules(model, include, exclude)
    width = lambda mod: masks.raw_tensor(mod).shape[input_dim(mod)]  # noqa: E731
    fits = [(name, mod) for name, mod in chosen if width(mod) % m == 0]
    skipped = [name or "<model>" for name, mod in chosen if width(mod) % m != 0]
    if not fits:
        raise PruneError(f"no selected layer has an input width divisible by m={m}: {', '.join(skipped)}")
    # a random criterion's scores depend on the layer alone, not on which others are selected
    new_masks = [_layer_mask(mod, score_fn, n, m, layer_seed(0, name, masks.raw_tensor(mod).shape))
                 for name, mod in fits]
    for (_, module), mask in zip(fits, new_masks):  # every mask decided before the model changes
        masks.attach(module, mask)
    layers, zeros, total = {}, 0, 0
    for name, module in fits:
        weight = module.weight
        count, z = weight.numel(), int(weight.numel() - torch.count_nonzero(weight))
        layers[name] = {"params": count, "zeros": z, "sparsity": z / count, "pattern": f"{n}:{m}"}
        zeros, total = zeros + z, total + count
    if skipped:
        log.warning("N:M %d:%d: left dense (input width not a multiple of %d): %s", n, m, m, ", ".join(skipped))
    return PruneReport(sparsity=zeros / total, pruned=zeros, total=total, layers=layers, skipped=skipped)
