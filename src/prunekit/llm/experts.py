"""llm.prune_experts: remove whole experts from a mixture-of-experts model (structured).

    report = llm.prune_experts(model, batches, experts=0.25)    # or a count per MoE block

Each expert is scored by REAP (router-weighted expert activation pruning, Lasby et al. 2025):
the mean, over the calibration tokens its router sends to it, of the routing weight the model
applies times the norm of the expert's output, S_j = mean_{x routed to j} g_j(x)·‖f_j(x)‖₂.
It keeps experts that are chosen with weight *and* move the residual stream, unlike frequency
alone; an expert no token reaches scores 0. The same number of lowest-scoring experts goes from
every MoE block, so the config's one expert count still describes the model: the router's rows
(and any per-expert bias or score correction), the experts' 3-D slices (weights and biases) and
the config's count (num_local_experts / num_experts / n_routed_experts) shrink together, and
`save_pretrained` / `from_pretrained` give the same model. With grouped routing (DeepSeek-V3's
n_group > 1) the removal is spread evenly over the groups, whose layout the router assumes.

Scoring runs the dense model's own forward once per sequence with the experts in transformers'
eager implementation; f_j(x) is the Experts module's own forward on x routed to j alone with
weight 1, so biases and family-specific activations are included without per-family code.
"""
import inspect
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from prunekit.errors import PruneError
from prunekit.llm.blocks import find_blocks, model_device
from prunekit.llm.moe import ROUTER_NAMES, eager_experts, is_experts
from prunekit.llm.prune import check_token_ids

log = logging.getLogger(__name__)
COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")   # modules' and configs' names
TOP_K_FIELDS = ("num_experts_per_tok", "top_k", "moe_topk")


@dataclass
class ExpertsReport:
    experts: int                                    # experts per MoE block now
    removed: dict = field(default_factory=dict)     # {block index: [original expert indices removed]}
    scores: dict = field(default_factory=dict)      # {block index: [REAP score of every original expert]}
    seconds: float = 0.0


@dataclass
class _MoE:
    index: int            # block index
    parent: nn.Module     # the MoE module holding router and experts
    experts: nn.Module    # the Experts module (3-D parameters)
    router: nn.Module
    count: int


def _find_router(parent: nn.Module, experts: nn.Module, count: int, where: str) -> nn.Module:
    found = [(name in ROUTER_NAMES, name, child) for name, child in parent.named_children()
             if child is not experts and getattr(child, "weight", None) is not None
             and child.weight.dim() == 2 and child.weight.shape[0] == count]
    if not found:
        raise PruneError(f"{where}: no router with one row per expert ({count}) beside the experts: "
                         "prunekit cannot remove experts from this family")
    return max(found, key=lambda item: item[0])[2]


def find_moe(model: nn.Module) -> list:
    """Every MoE layer of the model's blocks, as _MoE (blocks without experts are skipped)."""
    _, blocks = find_blocks(model)
    layers = []
    for index, block in enumerate(blocks):
        for name, module in block.named_modules():
            if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "experts":
                raise PruneError(f"block {index} {name}: experts stored as separate modules; expert removal "
                                 "supports transformers 5's 3-D experts (llm.prune handles both)")
            if not is_experts(module):
                continue
            parent = block.get_submodule(name.rpartition(".")[0])
            count = next(p for p in module.parameters(recurse=False) if p.dim() == 3).shape[0]
            router = _find_router(parent, module, count, f"block {index} {name}")
            layers.append(_MoE(index, parent, module, router, count))
    return layers


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _removal_count(experts, total: int) -> int:
    if isinstance(experts, bool) or not isinstance(experts, (int, float)):
        raise PruneError(f"experts must be a fraction in [0, 1) or a count of experts per block, got {experts!r}")
    if isinstance(experts, float):
        if not 0.0 <= experts < 1.0:
            raise PruneError(f"experts={experts}: a fraction must lie in [0, 1) (or pass a count as an int)")
        return round(total * experts)
    if not 0 <= experts < total:
        raise PruneError(f"experts={experts}: each MoE block has {total} experts; remove 0 to {total - 1}")
    return experts


def _check_plan(model, layers: list, removed: int) -> int:
    """The group count of grouped routing (1 without), after refusing a removal the routers cannot run."""
    total, config = layers[0].count, _text_config(model)
    left = total - removed
    top_k = next((int(getattr(config, f)) for f in TOP_K_FIELDS if getattr(config, f, None)), 1)
    if top_k > left:
        raise PruneError(f"experts: removing {removed} of {total} leaves {left}, fewer than the {top_k} each token "
                         "is routed to (num_experts_per_tok); remove fewer")
    groups = int(getattr(config, "n_group", None) or 1)
    if groups > 1:
        per_group = left // groups
        topk_group = int(getattr(config, "topk_group", None) or groups)
        if removed % groups or per_group < 2 or top_k > topk_group * per_group:
            raise PruneError(f"experts: grouped routing (n_group={groups}) needs a removal that is a multiple of "
                             f"{groups} leaving at least 2 and top-k/topk_group experts per group; got {removed}")
    return groups


def _routing(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
    """(hidden states, top-k expert indices, top-k weights) of an Experts call, by position."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    values = list(bound.arguments.values())
    if len(values) < 3:
        raise PruneError(f"{type(module).__name__}: expected forward(hidden_states, top_k_index, top_k_weights)")
    return values[0], values[1], values[2]


def _scorer(sums: torch.Tensor, counts: torch.Tensor):
    """Forward hook adding, per expert, Σ g_j(x)·‖f_j(x)‖ and the number of tokens routed to it."""
    def hook(module, args, kwargs, output):
        hidden, index, weights = _routing(module, args, kwargs)
        hidden = hidden.reshape(-1, hidden.shape[-1])
        for expert in index.unique().tolist():
            if not 0 <= expert < sums.numel():
                continue
            token, slot = torch.where(index == expert)
            alone = module.forward(hidden[token], torch.full_like(index[token, :1], expert),
                                   torch.ones_like(weights[token, :1]))
            norms = alone.float().norm(dim=-1)
            sums[expert] += float((weights[token, slot].float() * norms).sum())
            counts[expert] += token.numel()
    return hook


def reap_scores(model: nn.Module, layers: list, batches: torch.Tensor) -> list:
    """REAP score of every expert of every MoE layer (see the module docstring), on the dense model."""
    sums = [torch.zeros(layer.count, dtype=torch.float64) for layer in layers]
    counts = [torch.zeros(layer.count, dtype=torch.float64) for layer in layers]
    handles = [layer.experts.register_forward_hook(_scorer(s, c), with_kwargs=True)
               for layer, s, c in zip(layers, sums, counts)]
    kwargs = {"use_cache": False} if getattr(model.config, "use_cache", None) is not None else {}
    try:
        with torch.no_grad(), eager_experts(model):
            for row in batches.to(model_device(model)):
                model(input_ids=row.unsqueeze(0), **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return [s / c.clamp(min=1) for s, c in zip(sums, counts)]


def _lowest(scores: torch.Tensor, removed: int, groups: int) -> list:
    """Original indices of the `removed` lowest scores (removed / groups in each group), sorted."""
    size = scores.numel() // groups
    drop = []
    for g in range(groups):
        order = torch.argsort(scores[g * size:(g + 1) * size], stable=True)   # ties: lower index goes first
        drop += [g * size + int(i) for i in order[:removed // groups]]
    return sorted(drop)


def _sliced(module: nn.Module, count: int, keep: torch.Tensor) -> list:
    """(module, name, new tensor, is buffer) for each of its own tensors with one row per expert."""
    changes = [(module, name, nn.Parameter(p.detach()[keep.to(p.device)].clone(), requires_grad=p.requires_grad),
                False) for name, p in module.named_parameters(recurse=False) if p.dim() and p.shape[0] == count]
    changes += [(module, name, b[keep.to(b.device)].clone(), True)
                for name, b in module.named_buffers(recurse=False) if b.dim() and b.shape[0] == count]
    return changes


def _apply(changes: list, layers: list, config, left: int) -> None:
    """Swap in the prepared tensors and the new counts (nothing here can fail half-way)."""
    for module, name, value, is_buffer in changes:
        if is_buffer:
            module.register_buffer(name, value, persistent=name not in module._non_persistent_buffers_set)
        else:
            setattr(module, name, value)
    for layer in layers:
        for module in (layer.parent, layer.experts, layer.router):
            for attr in (*COUNT_FIELDS, "out_features"):
                if getattr(module, attr, None) == layer.count and not isinstance(getattr(module, attr), bool):
                    setattr(module, attr, left)
    for attr in COUNT_FIELDS:
        if attr in config.to_dict() and getattr(config, attr) == layers[0].count:
            setattr(config, attr, left)


def check_experts(model: nn.Module, experts) -> tuple:
    """(MoE layers, experts to remove from each, routing groups), or PruneError; changes nothing."""
    layers = find_moe(model)
    if not layers:
        raise PruneError(f"{type(model).__name__} has no mixture-of-experts blocks: experts= needs an MoE model")
    if len({layer.count for layer in layers}) != 1:
        raise PruneError("experts: the MoE blocks hold different numbers of experts; one config value cannot "
                         "describe a removal from each")
    removed = _removal_count(experts, layers[0].count)
    return layers, removed, _check_plan(model, layers, removed)


def prune_experts(model: nn.Module, batches: torch.Tensor, experts=0.25) -> ExpertsReport:
    """Remove the `experts` lowest-REAP experts (a fraction, or a count) of every MoE block, in
    place (see the module docstring). Checks everything, then changes the model: a refused or
    failed call leaves it as it was."""
    started = time.perf_counter()
    if not isinstance(batches, torch.Tensor) or batches.dim() != 2 or batches.dtype != torch.long \
            or batches.shape[0] == 0:
        raise PruneError("batches must be a LongTensor of token ids (sequences, tokens): see llm.calibration")
    check_token_ids(model, batches)
    layers, removed, groups = check_experts(model, experts)
    report = ExpertsReport(layers[0].count - removed)
    if removed == 0:
        return report
    was_training = model.training
    model.eval()
    try:
        scores = reap_scores(model, layers, batches)
    finally:
        model.train(was_training)
    changes = []
    for layer, score in zip(layers, scores):
        drop = _lowest(score, removed, groups)
        keep = torch.tensor([e for e in range(layer.count) if e not in drop])
        changes += _sliced(layer.experts, layer.count, keep) + _sliced(layer.router, layer.count, keep)
        report.removed[layer.index], report.scores[layer.index] = drop, [float(s) for s in score]
    _apply(changes, layers, _text_config(model), report.experts)
    report.seconds = time.perf_counter() - started
    log.info("experts: removed %d of %d per MoE block by REAP score: %s", removed, layers[0].count, report.removed)
    return report
