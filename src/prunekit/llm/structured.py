"""llm.prune_structured: remove attention heads, FFN neurons and whole blocks of a Hugging Face
transformer, leaving a model that `save_pretrained` writes and `from_pretrained` rebuilds.

Scores come from the dense model on the calibration sequences, one block at a time, so only one
block's statistics exist at once (Gram matrices too with `recover`):
- a block's influence is 1 - cos(input, output) averaged over tokens (ShortGPT); the `layers`
  blocks with the least are removed (found by a first dense pass that keeps only these scalars);
- then block by block: that block's statistics are read on its dense inputs, its dense outputs
  become the next block's inputs, and the block is cut;
- an FFN neuron j scores ‖X_j‖·‖W_out[:, j]‖ at the input of the layer that reads it, a key/value
  group of heads the same summed over its columns of the output projection (Wanda's score
  applied to whole units). Every block loses the same number of units, so that one config
  value (intermediate_size, num_attention_heads, num_key_value_heads) describes every block.
Heads go whole: whole GQA groups (a key/value head with its query heads) or the same number of
query heads out of every group (a model with one key/value head can only lose heads so), the
count left the nearest to the one asked that the family's config accepts (Gemma-3 and Llama
refuse hidden_size % heads != 0); the report says both. Families whose config cannot hold a
head size (BERT, GPT-2, ...: see families.py) are refused. Encoder-decoder models (T5) share one
head count between encoder, decoder and cross attention: every attention module loses the same
heads, scored by one whole-model forward per sequence (the decoder reading the same tokens).
With `recover=True` the layer reading the removed units (o_proj, the FFN's output layer) is
re-fitted by least squares to give the dense layer's outputs from what is left, on the same
calibration inputs (with its bias re-fitted too where it has one, as FLAP's bias compensation).
Before returning, the cut is checked to reload (structured.hf_config.check_reload: a full
save_pretrained -> from_pretrained -> same outputs up to RELOAD_LIMIT parameters, above it the
config's validation and a meta-device rebuild comparing every weight's name and shape).
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
from prunekit.llm.experts import check_experts, prune_experts
from prunekit.llm.layers import collect, matrix, replace_matrix
from prunekit.llm.prune import _calibrate
from prunekit.structured.hf_config import (ConfigGuard, check_reload, describes, drop_blocks, sync_attributes,
                                           text_config)

log = logging.getLogger(__name__)
RIDGE = 1e-4  # of the mean diagonal, added to the kept inputs' covariance: a stable solve


@dataclass
class StructuredLLMReport:
    removed_layers: list = field(default_factory=list)
    removed: dict = field(default_factory=dict)   # {block (original index) or, encoder-decoder, attention
    #   module name: {"kv_groups" or "query_heads": [...], "ffn": [...]}} (a block's 2nd attention: "query_heads@1")
    block_influence: list = field(default_factory=list)
    heads: tuple = ()            # (query heads, key/value heads) after, per block
    heads_asked: int | None = None   # query heads the fraction asked would leave (heads[0] is the nearest accepted)
    ffn: int | None = None       # FFN width after
    params_before: int = 0
    params_after: int = 0
    recovered: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class HeadCut:
    groups: int = 0      # whole key/value groups removed, with their query heads
    per_group: int = 0   # or: query heads removed out of every group, the key/value heads kept

    def left(self, att) -> tuple:
        """(query heads, key/value heads) this cut leaves of `att`."""
        kv = att.kv_heads - self.groups
        return kv * (att.heads // att.kv_heads - self.per_group), kv


@dataclass(frozen=True)
class Plan:
    head_cut: HeadCut | None = None
    heads_asked: int | None = None
    attention: families.Attention | None = None   # block 0's first attention, before the cut
    neurons: int = 0
    ffn_width: int = 0


def _plan(model, blocks, heads, ffn, layers) -> Plan:
    """Units to remove per block (key/value groups, neurons), checked before anything changes."""
    check_range("heads", heads, 0.0, 1.0, "[)")
    check_range("ffn", ffn, 0.0, 1.0, "[)")
    check_count("layers", layers, 0)
    if layers >= len(blocks):
        raise PruneError(f"layers={layers}: the model has {len(blocks)} blocks, at least one must stay")
    if families.encoder_decoder(model) and (ffn or layers):
        raise PruneError(f"{type(model).__name__} is encoder-decoder: llm.prune_structured removes only its heads "
                         "(ffn=0, layers=0); cut its FFN with pk.prune_structured")
    config, plan = text_config(model), Plan()
    for block in blocks:  # every block has the parts the plan cuts
        if heads:
            for att in families.find_attentions(block, config):
                families.check_describable(att, config)
        if ffn:
            families.find_ffn(block)
    if heads:
        att = families.find_attentions(blocks[0], config)[0]
        cut, asked = _head_cut(model, att, heads)
        plan = Plan(cut, asked, att)
    if ffn:
        width = matrix(families.find_ffn(blocks[0]).out).shape[1]
        neurons = round(width * ffn)
        if neurons == 0:
            raise PruneError(f"ffn={ffn} removes no neuron of {width}")
        plan = Plan(plan.head_cut, plan.heads_asked, plan.attention, neurons, width)
    return plan


def _head_cut(model, att, heads: float) -> tuple:
    """(HeadCut, query heads asked to stay): of every whole cut (1 to all but one key/value
    groups, or 1 to all but one query heads out of every group), the one leaving the count
    nearest to the one asked that the family's config accepts; whole groups, then more heads
    left, on a tie."""
    removed = round(att.heads * heads)
    if removed == 0:
        raise PruneError(f"heads={heads} removes no head of {att.heads}")
    asked, per_group = att.heads - removed, att.heads // att.kv_heads
    cuts = [HeadCut(groups=g) for g in range(1, att.kv_heads)] + [HeadCut(per_group=p) for p in range(1, per_group)]
    cuts.sort(key=lambda c: (abs(c.left(att)[0] - asked), c.per_group > 0, -c.left(att)[0]))
    refusals = []
    for cut in cuts:
        refusal = describes(model, lambda config, cut=cut: families.set_head_config(config, att, *cut.left(att)))
        if refusal is None:
            if cut.left(att)[0] != asked:
                log.warning("heads=%s asks %d heads of %d; %s does not accept it: %d heads left instead", heads,
                            asked, att.heads, type(text_config(model)).__name__, cut.left(att)[0])
            return cut, asked
        refusals.append(refusal)
    raise PruneError(f"heads={heads}: no whole-head cut of {att.heads} heads ({att.kv_heads} key/value) that "
                     f"{type(text_config(model)).__name__} accepts" + (f" ({refusals[0]})" if refusals else ""))


def _consumers(block, config, plan) -> dict:
    """{role: module} of the layers whose inputs are scored (and re-fitted)."""
    found = {}
    if plan.head_cut:
        found.update({f"o{i}": att.o for i, att in enumerate(families.find_attentions(block, config))})
    if plan.neurons:
        found["ffn"] = families.find_ffn(block).out
    return found


def _influence(inputs, outputs) -> float:
    cos = [nn.functional.cosine_similarity(x.float(), y.float(), dim=-1).mean() for x, y in zip(inputs, outputs)]
    return float(1 - torch.stack(cos).mean())


def _run(block, call, inputs) -> list:
    with torch.no_grad():
        return [call.run(block, x) for x in inputs]


def _dense_influence(blocks, calls, inputs, device) -> list:
    """Every block's influence from one dense pass: only these scalars are kept."""
    influence = []
    for block, call in zip(blocks, calls):
        with on_device(block, device):
            outputs = _run(block, call, inputs)
        influence.append(_influence(inputs, outputs))
        inputs = outputs
    return influence


def _cut_blocks(model, blocks, batches, plan, layers, recover, device, report) -> None:
    """Block by block: that block's statistics on its dense inputs, its dense outputs (the next
    block's inputs), then its cut; the statistics go with the block."""
    calls, inputs = _calibrate(families.Runner.wrap(model), blocks, batches, device)
    if layers:
        report.block_influence = _dense_influence(blocks, calls, inputs, device)
        report.removed_layers = sorted(torch.argsort(torch.tensor(report.block_influence),
                                                     stable=True)[:layers].tolist())
    config = text_config(model)
    for index, (block, call) in enumerate(zip(blocks, calls)):
        kept = index not in report.removed_layers
        with on_device(block, device):
            outputs = []
            stats = collect(block, _consumers(block, config, plan) if kept else {},
                            lambda: outputs.extend(_run(block, call, inputs)), gram=recover)
            if not layers:
                report.block_influence.append(_influence(inputs, outputs))
            if kept:
                report.removed[index] = _cut_block(block, config, stats, plan, recover)
        inputs, stats = outputs, None


def _cut_block(block, config, stats, plan, recover) -> dict:
    cut = {}
    if plan.head_cut:
        for i, att in enumerate(families.find_attentions(block, config)):
            done = _cut_heads(att, stats[f"o{i}"], plan.head_cut, recover)
            cut.update({(key if i == 0 else f"{key}@{i}"): value for key, value in done.items()})
    if plan.neurons:
        cut["ffn"] = _cut_ffn(block, stats["ffn"], plan.neurons, recover)
    return cut


def _cut_every_attention(model, batches, plan, recover, report) -> None:
    """Encoder-decoder: every attention module (encoder, decoder, cross) scored on one dense
    forward of the whole model per sequence, then cut alike. T5's self-attention layers of one
    stack all add the position bias of its first layer, one column per head: they keep the same
    heads, chosen on their summed scores."""
    attentions = families.find_attentions(model, text_config(model))
    device = model_device(model)

    def run():
        with torch.no_grad():
            for row in batches.to(device):
                model(input_ids=row.unsqueeze(0), decoder_input_ids=row.unsqueeze(0), use_cache=False)
    stats = collect(model, {att.name: att.o for att in attentions}, run, gram=recover)
    scores, shared = {}, {}
    for att in attentions:
        share = f"{att.name.partition('.')[0]}.SelfAttention" if att.name.endswith(".SelfAttention") else att.name
        shared[att.name] = share
        scores[share] = scores.get(share, 0) + _unit_scores(att.o, stats[att.name], att.head_dim)
    for att in attentions:
        report.removed[att.name] = _cut_heads(att, stats[att.name], plan.head_cut, recover, scores[shared[att.name]])


def _unit_scores(module, stats, unit: int) -> torch.Tensor:
    """Σ over each unit's `unit` consecutive input columns of ‖X_j‖·‖W[:, j]‖."""
    columns = stats.norms().to(module.weight.device) * matrix(module).norm(dim=0)
    return columns.reshape(-1, unit).sum(1)


def _kept_without_lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
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


def _cut_heads(att, stats, cut: HeadCut, recover: bool, scores=None) -> dict:
    """Remove whole key/value groups, or query heads evenly out of every group, of one attention
    module (scored on `stats`, or by `scores` per head); the indices removed."""
    per_group = att.heads // att.kv_heads
    scores = _unit_scores(att.o, stats, att.head_dim) if scores is None else scores
    scores = scores.reshape(att.kv_heads, per_group)
    if cut.groups:
        kv_keep = _kept_without_lowest(scores.sum(1), cut.groups)
        q_keep = (kv_keep.unsqueeze(1) * per_group + torch.arange(per_group, device=kv_keep.device)).flatten()
    else:
        kv_keep = torch.arange(att.kv_heads, device=scores.device)
        q_keep = torch.cat([g * per_group + _kept_without_lowest(scores[g], cut.per_group)
                            for g in range(att.kv_heads)])

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
    for table in att.module.children():  # T5's relative position bias: one column per head
        if isinstance(table, nn.Embedding) and table.embedding_dim == att.heads:
            table.weight = nn.Parameter(table.weight.detach()[:, q_keep].contiguous(), table.weight.requires_grad)
            table.embedding_dim = len(q_keep)
    if cut.groups:
        return {"kv_groups": _removed(kv_keep, att.kv_heads)}
    return {"query_heads": _removed(q_keep, att.heads)}


def _cut_ffn(block, stats, neurons: int, recover: bool) -> list:
    ffn = families.find_ffn(block)
    keep = _kept_without_lowest(_unit_scores(ffn.out, stats, 1), neurons)
    width = matrix(ffn.out).shape[1]
    for module in ffn.ins:
        _rows(module, torch.cat([keep, keep + width]) if ffn.fused else keep)
    _columns(ffn.out, keep, stats, recover)
    return _removed(keep, width)


def _update_config(model, plan: Plan) -> tuple:
    """Write the (uniform) cut sizes into the config: (heads, kv heads) or (), FFN width or None."""
    config = text_config(model)
    heads = ffn = None
    if plan.head_cut:
        heads = plan.head_cut.left(plan.attention)
        families.set_head_config(config, plan.attention, *heads)
    if plan.neurons:
        ffn = plan.ffn_width - plan.neurons
        families.set_config(config, families.FFN_FIELDS, ffn)
    return heads or (), ffn


def prune_structured(model: nn.Module, batches: torch.Tensor, *, heads: float = 0.0, ffn: float = 0.0,
                     layers: int = 0, recover: bool = False, device=None, experts=0.0) -> StructuredLLMReport:
    """Remove a fraction `heads` of every block's heads (whole key/value groups where it can; the
    nearest count the config accepts, see report.heads_asked), a fraction `ffn` of its FFN
    neurons, and the `layers` blocks of least influence; the config follows, and the result is
    checked to reload (else PruneError, the model as it was). `recover` re-fits the layers
    reading removed units. `batches`: token ids (sequences, tokens); a vision model (ViT) takes
    its pixel_values (images, channels, height, width). See the module docstring."""
    families.check_calibration(model, batches)
    name, blocks = find_blocks(model)
    plan = _plan(model, blocks, heads, ffn, layers)
    if experts:  # MoE: remove that fraction (or count) of every MoE block's experts (llm/experts.py)
        check_experts(model, experts)
    started = time.perf_counter()
    report = StructuredLLMReport(params_before=sum(p.numel() for p in model.parameters()), recovered=recover,
                                 heads_asked=plan.heads_asked)
    device = torch.device(device) if device else model_device(model)
    was_training, guard = model.training, ConfigGuard(model)  # a failure puts model and config back
    model.eval()
    try:
        if experts:  # report.removed["experts"]: {block: [original expert indices]}
            report.removed["experts"] = prune_experts(model, batches, experts).removed
        if families.encoder_decoder(model):
            _cut_every_attention(model, batches, plan, recover, report)
        else:
            _cut_blocks(model, blocks, batches, plan, layers, recover, device, report)
        report.heads, report.ffn = _update_config(model, plan)
        if layers:
            drop_blocks(model, name, report.removed_layers)
        sync_attributes(model)
        check_reload(model, families.sample(model, batches), "; this is a bug in prunekit: please report it")
    except BaseException:
        guard.restore()
        raise
    finally:
        model.train(was_training)
    report.params_after = sum(p.numel() for p in model.parameters())
    report.seconds = time.perf_counter() - started
    log.info("structured: %d -> %d parameters; blocks removed %s; heads %s (asked %s); ffn %s",
             report.params_before, report.params_after, report.removed_layers, report.heads, report.heads_asked,
             report.ffn)
    return report
