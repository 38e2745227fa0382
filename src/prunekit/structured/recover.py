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
dense model on all of them and on none of the evaluated photos). A Linear behind a global average
pool is then fitted per spatial position instead: the pool is linear, so the classifier applied
to every position of the feature map, averaged, is the classifier applied to the pooled features;
fitting position by position (to the dense classifier applied to the dense map's positions) has
H·W times the rows. The map is found, not assumed: the module whose 4-D output, averaged over
its positions, equals the Linear's input. Where there is no such map only the bias is re-fitted,
the weights kept as sliced.
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


def _pooled_map(model, linear, batch):
    """Name of the last module whose 4-D output (more than one position), averaged over its
    positions, is exactly the input `linear` receives (global average pooling between them);
    None where there is none."""
    maps, received, handles = {}, [], []

    def keep(name):
        def hook(m, args, out):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[1] == linear.in_features \
                    and out.shape[2] * out.shape[3] > 1:
                maps[name] = out.detach().float().mean((2, 3))
        return hook
    for name, module in model.named_modules():
        handles.append(module.register_forward_hook(
            (lambda m, args, out: received.append(args[0].detach().float())) if module is linear else keep(name)))
    try:
        with torch.no_grad():
            _call(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    matches = [n for n, pooled in maps.items() if received and pooled.shape == received[0].shape
               and torch.allclose(pooled, received[0], rtol=1e-4, atol=1e-5)]
    return matches[-1] if matches else None


def _positions(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _per_position(pruned, dense, name, module, batches, kept_out):
    """(inputs, targets) of a Linear behind a global average pool, one row per position of the
    map it pools; None where no such map is found."""
    source = _pooled_map(pruned, module, batches[0])
    if source is None or source not in dict(dense.named_modules()):
        return None
    dense_linear = dense.get_submodule(name)
    x = torch.cat([_positions(a.float()) for a in _capture(pruned, pruned.get_submodule(source), batches, "out")])
    maps = torch.cat([_positions(b.float()) for b in _capture(dense, dense.get_submodule(source), batches, "out")])
    if maps.shape[1] != dense_linear.in_features:
        return None
    with torch.no_grad():
        y = dense_linear(maps)[:, kept_out]
    return x, y


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
        if len(x) < ROWS_PER_WEIGHT * x.shape[1] and isinstance(module, nn.Linear):
            x, y = _per_position(pruned, dense, name, module, batches, kept_out) or (x, y)
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
