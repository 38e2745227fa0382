"""llm.prune_structured: remove attention heads, FFN neurons and whole blocks of a Hugging Face
transformer, leaving a model that `save_pretrained` writes and `from_pretrained` rebuilds.

Scores come from one pass of the dense model over the calibration sequences, block by block:
- a block's influence is 1 - cos(input, output) averaged over tokens (ShortGPT); the `layers`
  blocks with the least are removed;
- an FFN neuron j scores ‖X_j‖·‖W_out[:, j]‖ at the input of the layer that reads it, a key/value
  group of heads the same summed over its columns of the output projection (Wanda's score
  applied to whole units). Every block loses the same number of units, so that one config
  value (intermediate_size, num_attention_heads, num_key_value_heads) describes every block.
  Heads go in whole GQA groups (a key/value head with its query heads) where the fraction asked
  is a whole number of groups; otherwise the same number of query heads leaves every group and
  the key/value heads stay (a model with one key/value head can only lose heads so).
With `recover=True` the layer reading the removed units (o_proj, the FFN's output layer) is
re-fitted by least squares to give the dense layer's outputs from what is left, on the same
calibration inputs (with its bias re-fitted too where it has one, as FLAP's bias compensation).
"""
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from prunekit._utils.validate import check_count, check_range
from prunekit.errors import PruneError
from prunekit.llm import families
from prunekit.llm.blocks import find_blocks, model_device, on_device
from prunekit.llm.layers import collect, matrix, replace_matrix
from prunekit.llm.prune import _calibrate, _check_batches
from prunekit.structured.hf_config import ConfigGuard, drop_blocks, text_config

log = logging.getLogger(__name__)
RIDGE = 1e-4  # of the mean diagonal, added to the kept inputs' covariance: a stable solve


@dataclass
class StructuredLLMReport:
    removed_layers: list = field(default_factory=list)
    removed: dict = field(default_factory=dict)   # {block (original index): {"kv_groups" or "query_heads": [...], "ffn": [...]}}
    block_influence: list = field(default_factory=list)
    heads: tuple = ()            # (query heads, key/value heads) after, per block
    ffn: int | None = None       # FFN width after
    params_before: int = 0
    params_after: int = 0
    recovered: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class HeadCut:
    groups: int = 0      # whole key/value groups removed, with their query heads
    per_group: int = 0   # or: query heads removed out of every group, the key/value heads kept


def _plan(model, blocks, heads, ffn, layers):
    """Units to remove per block (key/value groups, neurons), checked before anything changes."""
    check_range("heads", heads, 0.0, 1.0, "[)")
    check_range("ffn", ffn, 0.0, 1.0, "[)")
    check_count("layers", layers, 0)
    if layers >= len(blocks):
        raise PruneError(f"layers={layers}: the model has {len(blocks)} blocks, at least one must stay")
    cut, neurons = None, 0
    if heads:
        cut = _head_cut(families.find_attention(blocks[0], text_config(model)), heads)
    if ffn:
        width = matrix(families.find_ffn(blocks[0]).out).shape[1]
        neurons = round(width * ffn)
        if neurons == 0:
            raise PruneError(f"ffn={ffn} removes no neuron of {width}")
    for block in blocks:  # every block has the parts the plan cuts
        if heads:
            families.find_attention(block, text_config(model))
        if ffn:
            families.find_ffn(block)
    return cut, neurons


def _head_cut(attention, heads: float) -> HeadCut:
    """Whole key/value groups where `heads` of them is a whole number short of all; otherwise the
    same number of query heads out of every group (a model with one key/value head, Gemma-3 270M)."""
    per_group = attention.heads // attention.kv_heads
    groups, per = round(attention.kv_heads * heads), round(per_group * heads)
    if 0 < groups < attention.kv_heads:
        return HeadCut(groups=groups)
    if 0 < per < per_group:
        return HeadCut(per_group=per)
    raise PruneError(f"heads={heads}: heads go in whole key/value groups or evenly out of every group "
                     f"({attention.kv_heads} groups of {per_group}); that removes {groups} groups or {per} "
                     f"heads per group, need 1 to {attention.kv_heads - 1} groups or 1 to {per_group - 1} per group")


def _consumers(block, model, heads, ffn) -> dict:
    """{role: module} of the layers whose inputs are scored (and re-fitted)."""
    found = {}
    if heads:
        found["o"] = families.find_attention(block, text_config(model)).o
    if ffn:
        found["ffn"] = families.find_ffn(block).out
    return found


def _dense_pass(model, blocks, calls, inputs, heads, ffn, recover, device):
    """(per block {role: InputStats}, per block influence), from the dense model."""
    stats, influence = [], []
    for block, call in zip(blocks, calls):
        with on_device(block, device):
            consumers = _consumers(block, model, heads, ffn)
            outputs = []

            def run(block=block, call=call, outputs=outputs, inputs=inputs):
                with torch.no_grad():
                    outputs.extend(call.run(block, x) for x in inputs)
            by_name = collect(block, consumers, run, gram=recover)
            cos = [nn.functional.cosine_similarity(x.float(), y.float(), dim=-1).mean() for x, y in zip(inputs, outputs)]
            influence.append(float(1 - torch.stack(cos).mean()))
            stats.append(by_name)
            inputs = outputs
    return stats, influence


def _unit_scores(module, stats, unit: int) -> torch.Tensor:
    """Σ over each unit's `unit` consecutive input columns of ‖X_j‖·‖W[:, j]‖."""
    columns = stats.norms().to(module.weight.device) * matrix(module).norm(dim=0)
    return columns.reshape(-1, unit).sum(1)


def _lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the units kept: all but the `count` lowest scores, in order."""
    drop = torch.argsort(scores, stable=True)[:count]
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[drop] = False
    return keep.nonzero().flatten()


def _rows(module, rows: torch.Tensor) -> None:
    """Keep only these output rows (and bias entries) of a Linear or Conv1D."""
    weight = matrix(module)[rows]
    bias = module.bias.detach()[rows] if module.bias is not None else None
    replace_matrix(module, weight, bias)


def _columns(module, keep: torch.Tensor, stats, recover: bool) -> None:
    """Keep only these input columns; with `recover`, re-fit them (and the bias) by least squares."""
    weight = matrix(module)
    bias = module.bias.detach().float() if module.bias is not None else None
    if not recover:
        replace_matrix(module, weight[:, keep], bias)
        return
    moment = stats.hessian().to(weight.device)
    if bias is not None:  # with an intercept: fit on the covariance, then re-centre the bias
        mean = stats.mean().to(weight.device)
        moment = moment - torch.outer(mean, mean)
    kept = moment[keep][:, keep]
    kept = kept + RIDGE * kept.diagonal().mean().clamp_min(1e-12) * torch.eye(len(keep), device=kept.device)
    new = torch.linalg.solve(kept, (weight @ moment[:, keep]).t()).t()
    if bias is not None:
        bias = bias + weight @ mean - new @ mean[keep]
    replace_matrix(module, new, bias)


def _removed(keep: torch.Tensor, count: int) -> list:
    return sorted(set(range(count)) - set(keep.tolist()))


def _cut_heads(block, config, stats, cut: HeadCut, recover: bool) -> dict:
    """Remove whole key/value groups, or query heads evenly out of every group, of one block;
    the indices removed."""
    att = families.find_attention(block, config)
    per_group = att.heads // att.kv_heads
    scores = _unit_scores(att.o, stats, att.head_dim).reshape(att.kv_heads, per_group)
    if cut.groups:
        kv_keep = _lowest(scores.sum(1), cut.groups)
        q_keep = (kv_keep.unsqueeze(1) * per_group + torch.arange(per_group, device=kv_keep.device)).flatten()
    else:
        kv_keep = torch.arange(att.kv_heads, device=scores.device)
        q_keep = torch.cat([g * per_group + _lowest(scores[g], cut.per_group) for g in range(att.kv_heads)])

    def rows(heads_kept, offset=0):
        return (offset + heads_kept.unsqueeze(1) * att.head_dim
                + torch.arange(att.head_dim, device=heads_kept.device)).flatten()
    if att.qkv is not None:
        q_rows, kv_size = att.heads * att.head_dim, att.kv_heads * att.head_dim
        _rows(att.qkv, torch.cat([rows(q_keep), rows(kv_keep, q_rows), rows(kv_keep, q_rows + kv_size)]))
    else:
        _rows(att.q, rows(q_keep))
        _rows(att.k, rows(kv_keep))
        _rows(att.v, rows(kv_keep))
    _columns(att.o, rows(q_keep), stats, recover)
    _set_head_counts(block, att.o, len(q_keep), len(kv_keep))
    if cut.groups:
        return {"kv_groups": _removed(kv_keep, att.kv_heads)}
    return {"query_heads": _removed(q_keep, att.heads)}


def _set_head_counts(block, o_proj, heads: int, kv_heads: int) -> None:
    """The counts an attention module keeps from its config at build time (repeat_kv reads
    num_key_value_groups; Phi-3 splits its fused qkv by num_key_value_heads)."""
    for module in block.modules():
        if getattr(module, "o_proj", None) is o_proj:
            if hasattr(module, "num_key_value_groups"):
                module.num_key_value_groups = heads // kv_heads
            if hasattr(module, "num_key_value_heads"):
                module.num_key_value_heads = kv_heads


def _cut_ffn(block, stats, neurons: int, recover: bool) -> list:
    ffn = families.find_ffn(block)
    keep = _lowest(_unit_scores(ffn.out, stats, 1), neurons)
    width = matrix(ffn.out).shape[1]
    for module in ffn.ins:
        _rows(module, torch.cat([keep, keep + width]) if ffn.fused else keep)
    _columns(ffn.out, keep, stats, recover)
    return _removed(keep, width)


def _update_config(model, block, head_cut, neurons: int) -> tuple:
    """Write the (uniform) cut sizes of a kept `block` into the config."""
    config = text_config(model)
    heads = ffn = None
    if head_cut:
        att = families.find_attention(block, config)
        kv = att.kv_heads - head_cut.groups
        heads = (kv * (att.heads // att.kv_heads - head_cut.per_group), kv)
        config.head_dim = att.head_dim  # explicit: hidden / heads no longer gives it
        config.num_attention_heads, config.num_key_value_heads = heads
    if neurons:
        ffn = matrix(families.find_ffn(block).out).shape[1]
        families.set_config(config, families.FFN_FIELDS, ffn)
    return heads, ffn


def prune_structured(model: nn.Module, batches: torch.Tensor, *, heads: float = 0.0, ffn: float = 0.0,
                     layers: int = 0, recover: bool = False, device=None) -> StructuredLLMReport:
    """Remove a fraction `heads` of every block's heads (whole key/value groups where it can), a
    fraction `ffn` of its FFN neurons, and the `layers` blocks of least influence; the config
    follows. `recover` re-fits the layers reading removed units. See the module docstring."""
    _check_batches(batches)
    name, blocks = find_blocks(model)
    head_cut, neurons = _plan(model, blocks, heads, ffn, layers)
    started = time.perf_counter()
    report = StructuredLLMReport(params_before=sum(p.numel() for p in model.parameters()), recovered=recover)
    device = torch.device(device) if device else model_device(model)
    was_training, guard = model.training, ConfigGuard(model)  # a failure puts model and config back
    model.eval()
    try:
        calls, inputs = _calibrate(model, blocks, batches, device)
        stats, report.block_influence = _dense_pass(model, blocks, calls, inputs, heads, ffn, recover, device)
        report.removed_layers = sorted(torch.argsort(torch.tensor(report.block_influence), stable=True)[:layers].tolist())
        for index, block in enumerate(blocks):
            if index not in report.removed_layers:
                with on_device(block, device):
                    cut = report.removed.setdefault(index, {})
                    if head_cut:
                        cut.update(_cut_heads(block, text_config(model), stats[index]["o"], head_cut, recover))
                    if neurons:
                        cut["ffn"] = _cut_ffn(block, stats[index]["ffn"], neurons, recover)
        kept = [b for i, b in enumerate(blocks) if i not in report.removed_layers]
        report.heads, report.ffn = _update_config(model, kept[0], head_cut, neurons)
        if layers:
            drop_blocks(model, name, report.removed_layers)
    except BaseException:
        guard.restore()
        raise
    finally:
        model.train(was_training)
    report.params_after = sum(p.numel() for p in model.parameters())
    report.seconds = time.perf_counter() - started
    log.info("structured: %d -> %d parameters; blocks removed %s; heads %s; ffn %s", report.params_before,
             report.params_after, report.removed_layers, report.heads, report.ffn)
    return report
