"""Calibration-only recovery after structured pruning, for a pretrained model and no training data.

Each layer that lost input channels (a Conv with groups=1, or a Linear) is re-fitted, in forward
order, by least squares: from the inputs it now receives in the pruned model, give the outputs
the dense model's layer gave on the same calibration inputs (the channels it still produces,
before any BatchNorm). Fitting on the pruned model's own inputs also absorbs the error of the
layers before it. A layer with a bias gets its bias re-fitted with it (an intercept), as FLAP's
bias compensation. Convolutions are fitted on their unfolded patches, so kernel size, stride,
padding and dilation are respected. A small ridge (RIDGE of the mean diagonal) keeps the solve
stable. Where the calibration gives fewer than ROWS_PER_WEIGHT rows per input weight (a
classifier after global pooling sees one row per image), a full fit would memorise the
calibration set (seen: EfficientNet-Lite0's classifier re-fitted on 28 images agreed with the
dense model on all of them and on none of the evaluated photos); there only the bias is
re-fitted, the weights kept as sliced.
"""
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)
RIDGE = 1e-3
MAX_ROWS = 200_000  # positions kept per layer (a fixed, seeded subsample beyond that)
ROWS_PER_WEIGHT = 4  # fewer calibration rows than this per input weight: the fit would memorise them


def _refittable(module) -> bool:
    """A Linear, or a plain Conv2d (groups 1, numeric padding, padding done by the conv itself)."""
    if type(module) is nn.Linear:
        return True
    return type(module) is nn.Conv2d and module.groups == 1 and not isinstance(module.padding, str)


def _call(model, batch):
    """Run one calibration batch: a tensor, (inputs, targets), or a dict of keyword inputs."""
    if isinstance(batch, dict):
        return model(**{k: v for k, v in batch.items() if k != "labels"})
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    return model(batch)


def _capture(model, module, batches, what):
    """The module's input ("in") or output ("out") on every calibration batch."""
    seen = []

    def hook(m, args, out):
        seen.append((args[0] if what == "in" else out).detach())
    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for batch in batches:
                _call(model, batch)
    finally:
        handle.remove()
    return seen


def _rows(module, x: torch.Tensor) -> torch.Tensor:
    """Inputs as one row per output position: (positions, in features)."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    patches = nn.functional.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def _targets(module, y: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return y.reshape(-1, y.shape[-1])
    return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])


def _solve(x: torch.Tensor, y: torch.Tensor, bias: bool):
    """(W, b) minimising ‖x Wᵀ + b − y‖² + ridge; b None without a bias."""
    x, y = x.double(), y.double()
    if bias:
        mx, my = x.mean(0), y.mean(0)
        x, y = x - mx, y - my
    gram = x.t() @ x
    gram += RIDGE * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(len(gram), dtype=gram.dtype,
                                                                         device=gram.device)
    weight = torch.linalg.solve(gram, x.t() @ y).t()
    return weight, (my - weight @ mx if bias else None)


def _subsample(x, y, seed=0):
    if len(x) <= MAX_ROWS:
        return x, y
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:MAX_ROWS]
    return x[pick], y[pick]


def refit(pruned: nn.Module, dense: nn.Module, calibration, removed: dict) -> list:
    """Re-fit every Conv/Linear of `pruned` whose input channels `removed` names (original
    indexing, as StructuredResult.removed); `dense` is the model before pruning. Returns the
    names re-fitted."""
    batches = list(calibration)
    dense_modules, done = dict(dense.named_modules()), []
    for name, module in pruned.named_modules():
        cut = removed.get(name, {})
        if not cut.get("in") or not _refittable(module) or name not in dense_modules:
            continue
        kept_out = [i for i in range(dense_modules[name].weight.shape[0]) if i not in set(cut.get("out", []))]
        xs = _capture(pruned, module, batches, "in")
        ys = _capture(dense, dense_modules[name], batches, "out")
        x = torch.cat([_rows(module, a.float()) for a in xs])
        y = torch.cat([_targets(module, b.float()) for b in ys])[:, kept_out]
        x, y = _subsample(x, y)
        if len(x) >= ROWS_PER_WEIGHT * x.shape[1]:
            weight, bias = _solve(x, y, module.bias is not None)
        elif module.bias is not None:  # too few rows: the intercept only
            weight = module.weight.detach().reshape(len(kept_out), -1).double()
            bias = y.double().mean(0) - weight @ x.double().mean(0)
        else:
            continue
        with torch.no_grad():
            module.weight.copy_(weight.reshape(module.weight.shape).to(module.weight.dtype))
            if bias is not None:
                module.bias.copy_(bias.to(module.bias.dtype))
        done.append(name)
    log.info("recovery: re-fitted %d layers on %d calibration batches", len(done), len(batches))
    return done
