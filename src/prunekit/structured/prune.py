"""Structured pruning: pk.prune_structured removes whole channels, filters and neurons.

One traced forward finds every set of coupled channels (graph/); a criterion scores them
(criteria/); this module decides how many go from each channel space and removes them
(surgery/), then runs the pruned model to the end to check every shape it predicted. A
reshape or slice with a fixed size that the trace could not see, or code after the last
traced call that fails, makes that check fail: the channels blamed are then kept and the
choice is made again. A failure restores the model.
"""
import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from prunekit import surgery
from prunekit._utils.inputs import as_inputs, tensors_of
from prunekit._utils.modes import eval_mode
from prunekit._utils.validate import check_count, check_range, compile_patterns
from prunekit.criteria import get_channel
from prunekit.criteria.group import units as unit_order
from prunekit.errors import PruneError
from prunekit.graph import analyze
from prunekit.structured import blocks
from prunekit.structured.choose import Options, choose_global, choose_layer, keep_one_per_layer
from prunekit.structured.hf_config import ConfigGuard, compact_skips, is_hf, sync_config, text_config
from prunekit.structured.recover import refit
from prunekit.structured.removed import record_removed
from prunekit.structured.repair import apply_checked
from prunekit.targets import resolve_ignore

log = logging.getLogger(__name__)

GRANULARITIES = ("channel", "head", "layer")


@dataclass
class StructuredResult:
    model: nn.Module
    removed: dict = field(default_factory=dict)  # name -> {"out": [...], "in": [...]} original indexing
    params_before: int = 0
    params_after: int = 0
    kept_fixed: list = field(default_factory=list)  # "op in module" whose channels had to stay
    blocks: list = field(default_factory=list)      # granularity "layer": the removed blocks
    recovered: list = field(default_factory=list)   # recover=True: the layers re-fitted


def _validate(ratio, granularity, scope, round_to, max_ratio, overrides, steps):
    check_range("ratio", ratio, 0, 1, "[)")
    if granularity not in GRANULARITIES:
        raise PruneError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if scope not in ("layer", "global"):
        raise PruneError(f"scope must be 'layer' or 'global', got {scope!r}")
    check_count("round_to", round_to, 1)
    check_range("max_ratio", max_ratio, 0, 1, "(]")
    if not isinstance(overrides, dict):
        raise PruneError(f"overrides must be a dict {{module regex: ratio}}, got {type(overrides).__name__}")
    for pattern, value in overrides.items():
        compile_patterns(pattern, "overrides key")
        check_range(f"overrides[{pattern!r}]", value, 0, 1, "[)")
    check_count("steps", steps, 1)


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _prune_layers(model, inputs, ratio, importance, calibration, seed, ignored, result):
    """Replace the least influential residual blocks by Skip; put them back if shapes change."""
    chosen = blocks.choose_blocks(model, inputs, ratio, importance, calibration, seed, ignored)
    originals = [(name, model.get_submodule(name)) for name, _ in chosen]
    with torch.no_grad(), eval_mode(model):
        before = [tuple(t.shape) for t in tensors_of(model(*inputs))]
    try:
        blocks.remove_blocks(model, chosen)
        with torch.no_grad(), eval_mode(model):
            after = [tuple(t.shape) for t in tensors_of(model(*inputs))]
        if after != before:
            raise PruneError(f"removing blocks {[n for n, _ in chosen]} changed the output shapes")
    except BaseException:
        for name, module in originals:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module)
        raise
    result.blocks = [name for name, _ in chosen]
    return result


def nothing_to_prune(model, what) -> PruneError:
    return PruneError(f"{type(model).__name__} has no prunable {what}: every layer feeds the output, is "
                      "ignored, or has a fixed shape")


def channel_spaces(model, example_inputs, *, ignore=None) -> dict:
    """{space name: number of channels} for every channel space prune_structured would cut
    (a space is named after its first producing layer; `overrides={re.escape(name): r}`
    addresses exactly that space). The model is not changed."""
    graph = analyze(model, as_inputs(example_inputs), ignore=resolve_ignore(model, ignore))
    return {space.name: len(space.units) for space in graph.spaces}


def prune_structured(model, example_inputs, *, ratio, granularity="channel", importance=None,
                     scope="layer", ignore=None, round_to=1, calibration=None, overrides=None,
                     max_ratio=1.0, steps=1, seed=None, recover=False, require_config=True) -> StructuredResult:
    """Remove `ratio` of the channels of every channel space (in place; the model is returned).

    scope "layer" takes `ratio` from each space; "global" takes `ratio` of all units, the
    lowest-scored first, each space's scores divided by that space's mean (so layers of
    different scale compete fairly; use importance="lamp" for LAMP's normalisation).
    `overrides` {module regex: ratio} sets a space's own ratio;
    `max_ratio` caps what any space loses; `round_to` keeps channel counts multiples of it;
    `steps` > 1 prunes in equal steps, re-scoring in between. Output layers keep their
    channels; modules in `ignore` are left exactly as they are.

    granularity "channel" removes channels/filters/neurons (importance default "l2"),
    "head" attention heads (default "l2"), "layer" whole residual blocks: `ratio` of them,
    by "block_influence" (default, on `calibration` or the example inputs) or "random".

    `recover=True` (channels and heads): every Conv/Linear that lost input channels is re-fitted
    by least squares to give the dense layer's outputs on `calibration` (or the example inputs),
    with no training data (structured/recover.py); it keeps a copy of the dense model meanwhile.

    A Hugging Face model must stay describable by its config (from_pretrained rebuilds it):
    a cut the config cannot describe is refused and the model restored, unless
    `require_config=False` (then save with pk.save, load with pk.load).
    """
    overrides = {} if overrides is None else overrides
    _validate(ratio, granularity, scope, round_to, max_ratio, overrides, steps)
    round_to = _config_step(model, granularity, round_to, require_config)
    inputs = as_inputs(example_inputs)
    ignored = resolve_ignore(model, ignore)
    result = StructuredResult(model, params_before=param_count(model))
    guard = ConfigGuard(model)  # puts the model (and a Hugging Face config) back if anything below fails
    try:
        if granularity == "layer":
            _prune_layers(model, inputs, ratio, importance or "block_influence", calibration, seed, ignored, result)
            if require_config:  # a Hugging Face model: its config counts the blocks left
                compact_skips(model, lambda m: isinstance(m, blocks.Skip))
            result.params_after = param_count(model)
            sync_config(model)
        else:
            options = Options(ratio, round_to, max_ratio, overrides)
            _prune_channels(model, inputs, steps, granularity, ignored, importance, calibration, seed, scope,
                            options, recover, result)
        if require_config:
            guard.check(inputs)  # save_pretrained -> from_pretrained -> same outputs
    except BaseException:
        guard.restore()
        raise
    return result


def _config_step(model, granularity, round_to, require_config) -> int:
    """Hugging Face configs refuse a residual width that the head count does not divide (Llama,
    Gemma-3, GPT-2, BERT, ModernBERT): channels go in steps of the head count there, unless
    round_to is given, so that a describable cut exists."""
    if granularity != "channel" or round_to != 1 or not require_config or not is_hf(model):
        return round_to
    heads = getattr(text_config(model), "num_attention_heads", None)
    return heads if isinstance(heads, int) and heads > 1 else round_to


def _prune_channels(model, inputs, steps, granularity, ignored, importance, calibration, seed, scope, options,
                    recover, result):
    """Channels or heads: the pruning steps, then the least-squares recovery if asked."""
    criterion = get_channel(importance or "l2")
    chooser = choose_layer if scope == "layer" else choose_global
    dense = copy.deepcopy(model) if recover else None
    _prune_steps(model, inputs, steps, granularity, ignored, criterion, calibration, seed, chooser, options, result)
    if recover:
        with eval_mode(model), eval_mode(dense):
            result.recovered = refit(model, dense, calibration if calibration is not None else [inputs],
                                     result.removed)
    _done(model, result)


def prune_units(model, example_inputs, graph, units) -> StructuredResult:
    """Remove exactly `units` (unit roots of `graph`, which analyze(model, example_inputs, ...)
    returned), checked and repaired as prune_structured does: for a caller that has chosen
    already (soft pruning), so that no other unit with a tying score goes instead. A unit
    whose channels must stay (an op with a fixed size) is kept and named in kept_fixed.
    `graph` is not changed; a failure restores the model."""
    wanted = {int(u) for u in units}
    unknown = sorted(wanted - set(graph.units.tolist()))
    if unknown:
        raise PruneError(f"units {unknown[:5]} are not removable units of this graph; choose among graph.units")
    graph = copy.deepcopy(graph)  # the repair loop pins channels in the graph it is given
    inputs = as_inputs(example_inputs)
    result = StructuredResult(model, params_before=param_count(model))
    origin = _origins(model, graph, {})
    removed, plan = apply_checked(model, inputs, graph, lambda g: wanted & set(g.units.tolist()),
                                  result.kept_fixed)
    if plan is not None:
        record_removed(graph, removed, plan, origin, result.removed)
    return _done(model, result)


def _done(model, result):
    """Sorted indices in result.removed, the parameter count after, the config in step."""
    for entry in result.removed.values():
        entry["out"].sort()
        entry["in"].sort()
    result.params_after = param_count(model)
    sync_config(model)
    log.debug("structured pruning: %d -> %d parameters", result.params_before, result.params_after)
    if result.params_after == result.params_before and result.kept_fixed:
        # seen on YOLO: a head's fixed-size ops pinned every coupled channel; say so, not silently
        log.warning("structured pruning removed nothing: channels had to stay for %s; pass ignore=[...] "
                    "naming that module to prune the rest", ", ".join(sorted(set(result.kept_fixed))[:3]))
    return result


def _origins(model, graph, origin):
    """Each sliced tensor dim's indices in the original model, for what is not there yet."""
    for s in graph.slices:
        origin.setdefault((s.module, s.tensor, s.dim), np.arange(surgery.raw(model, s.module, s.tensor).shape[s.dim]))
    return origin


def _prune_steps(model, inputs, steps, granularity, ignored, criterion, calibration, seed, chooser, options,
                 result):
    """`steps` rounds of analyse, score, choose and remove; cuts are added to result.removed."""
    first_counts, origin = None, {}
    for step in range(1, steps + 1):
        graph = analyze(model, inputs, ignore=ignored, heads=granularity == "head")
        if first_counts is None:
            if not graph.spaces:
                raise nothing_to_prune(model, "attention heads" if granularity == "head" else "channels")
            first_counts = {s.name: len(s.units) for s in graph.spaces}
        score_of = dict(zip(unit_order(graph).tolist(), criterion(graph, model, calibration, seed)))
        _origins(model, graph, origin)
        progress = step / steps
        removed, plan = apply_checked(
            model, inputs, graph,
            lambda g: keep_one_per_layer(g, chooser(g, score_of, first_counts, progress, options), score_of), result.kept_fixed)
        if plan is not None:
            record_removed(graph, removed, plan, origin, result.removed)
