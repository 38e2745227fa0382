"""llm.prune: one-shot pruning of a Hugging Face transformer, block by block.

    model, tokenizer = llm.load(folder)
    batches = llm.calibration(tokenizer, text, n=64, seq_len=512)
    report = llm.prune(model, batches, method="wanda", sparsity=0.5)       # or pattern="2:4"

Block i is pruned on the inputs that the already pruned blocks before it produce, then its
pruned outputs become block i+1's inputs (as Wanda's and SparseGPT's papers do). Peak memory
is the model, the calibration activations (two copies), one block's statistics and, so that a
failing call can put the model back, the original weights: in memory up to 1 GiB, then spilled
to a temporary file block by block (llm/rollback.py). Pruned weights are
plain zeros in the model's own tensors: `save_pretrained` writes them as they are.
"""
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from prunekit._utils.validate import check_range
from prunekit.errors import PruneError
from prunekit.llm.blocks import (
    BlockCall,
    find_blocks,
    first_block_inputs,
    model_device,
    on_device,
    record_calls,
    to_device,
)
from prunekit.llm.layers import (
    block_layers,
    collect,
    count_zeros,
    matrix,
    matrix_shape,
    set_matrix,
    unpruned_weights,
)
from prunekit.llm import ranks
from prunekit.llm.methods import METHODS
from prunekit.llm.moe import expert_of
from prunekit.llm.owl import outlier_ratio, owl_sparsities
from prunekit.llm.rollback import Rollback

log = logging.getLogger(__name__)
ALLOCATIONS = ("uniform", "owl")


@dataclass
class LLMPruneReport:
    method: str
    pattern: str | None
    allocation: str
    sparsity: float                      # achieved: zeros counted in the stored weights of every
                                         # matrix of the blocks (expert slices and not_reached included)
    blocks: list = field(default_factory=list)     # [{"block", "target", "sparsity", "zeros", "params", "seconds"}]
    not_reached: list = field(default_factory=list)  # layers the calibration never ran: left dense
    magnitude_fallback: list = field(default_factory=list)  # experts no calibration token reached:
                                                            # pruned by magnitude ("block 0 mlp.experts.3")
    left_dense: list = field(default_factory=list)  # other block weights not pruned, by design (MoE routers)
    outlier_ratios: list = field(default_factory=list)  # OWL's D_i per block (allocation="owl")
    calibration: tuple = ()              # (sequences, tokens each)
    seconds: float = 0.0


def parse_pattern(pattern):
    """"2:4" -> (2, 4); None stays None."""
    if pattern is None:
        return None
    try:
        n, m = (int(part) for part in str(pattern).split(":"))
    except ValueError:
        raise PruneError(f"pattern must look like '2:4' (keep N of every M), got {pattern!r}") from None
    if not 1 <= n < m:
        raise PruneError(f"pattern {pattern!r}: need 1 <= N < M")
    return n, m


def _check_batches(batches) -> None:
    if not isinstance(batches, torch.Tensor) or batches.dim() != 2 or batches.dtype != torch.long \
            or batches.shape[0] == 0:
        raise PruneError("batches must be a LongTensor of token ids (sequences, tokens): see llm.calibration")


def check_token_ids(model, ids: torch.Tensor, what: str = "batches") -> None:
    """Every id has a row in the model's input embedding (0 <= id < num_embeddings). An id
    beyond it (another model's tokenizer, a larger vocabulary) is an IndexError deep inside the
    embedding's forward otherwise. A model without an nn.Embedding input (ViT) is not checked."""
    try:
        rows = getattr(model.get_input_embeddings(), "num_embeddings", None)
    except (AttributeError, NotImplementedError):
        return
    if rows is None or ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= rows:
        raise PruneError(f"{what} hold token ids {low}..{high}, but {type(model).__name__}'s vocabulary has {rows} "
                         f"(ids 0..{rows - 1}): tokenize with the model's own tokenizer")


def check_options(batches, method, sparsity, pattern, allocation="uniform"):
    """The options alone (before any model is read): the N:M pair, or None."""
    METHODS.get(method)
    _check_batches(batches)
    if allocation not in ALLOCATIONS:
        raise PruneError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    nm = parse_pattern(pattern)
    if nm is not None and allocation != "uniform":
        raise PruneError("an N:M pattern fixes every layer's sparsity: use allocation='uniform'")
    if nm is None:
        check_range("sparsity", sparsity, 0.0, 1.0, "[)")
    return nm


def _check(model, batches, method, sparsity, pattern, allocation):
    nm = check_options(batches, method, sparsity, pattern, allocation)
    check_token_ids(model, batches)
    _, blocks = find_blocks(model)
    for index, block in enumerate(blocks):
        check_pattern_fits(index, block, nm, pattern)
    return nm


def check_pattern_fits(index, block, nm, pattern) -> None:
    """Every pruned matrix of the block has a multiple of M inputs (N:M groups run along them)."""
    for name, layer in block_layers(block).items():
        if nm is not None and matrix_shape(layer)[1] % nm[1]:
            raise PruneError(f"block {index} {name}: {matrix_shape(layer)[1]} inputs are not a multiple "
                             f"of M={nm[1]} for pattern {pattern}")


def _run_all(block: nn.Module, call: BlockCall, inputs: list) -> list:
    with torch.no_grad():
        return [call.run(block, x) for x in inputs]


def _block_stats(block, layers, call, inputs, needs):
    """Every layer's input statistics over the calibration sequences (of every rank, under torchrun)."""
    if needs == "none":
        return {}
    gram = needs == "hessian"
    return ranks.reduce_stats(collect(block, layers, lambda: _run_all(block, call, inputs), gram=gram), gram)


def _owl_targets(blocks, calls, inputs, sparsity, threshold, spread, device, report):
    """Per-block sparsities by OWL, from the dense model's own activations, block by block."""
    ratios = []
    for block, call in zip(blocks, calls):
        with on_device(block, device):
            layers = block_layers(block)
            stats = _block_stats(block, layers, call, inputs, "norms")
            reached = [name for name in layers if name in stats]
            ratios.append(outlier_ratio([matrix(layers[n]) for n in reached], [stats[n] for n in reached],
                                        threshold))
            inputs = _run_all(block, call, inputs)
    targets = owl_sparsities(ratios, sparsity, spread)
    report.outlier_ratios = ratios
    log.info("owl: outlier ratios %s -> block sparsities %s", [f"{r:.4f}" for r in ratios],
             [f"{s:.3f}" for s in targets])
    return targets


def _layer_method(name, stats, index, report):
    """The method that prunes one layer, or None where the layer stays as it is (the calibration
    never ran it); an expert its router never chose has no statistics: dense, it would miss the
    target, so it is pruned by magnitude and named in the report."""
    chosen = METHODS.get(report.method)
    if chosen.needs == "none" or name in stats:
        return chosen
    if expert_of(name) is None:
        report.not_reached.append(f"block {index} {name}")
        return None
    if f"block {index} {expert_of(name)}" not in report.magnitude_fallback:
        report.magnitude_fallback.append(f"block {index} {expert_of(name)}")
    return METHODS.get("magnitude")


def _prune_layers(layers, stats, target, pattern, saved, report, index) -> None:
    """Prune every layer of a block; under torchrun each rank computes its share (ranks.owners)
    and receives the others'."""
    owners = ranks.owners([math.prod(matrix_shape(layer)) for layer in layers.values()])
    kept = set()
    for position, (name, layer) in enumerate(layers.items()):
        method = _layer_method(name, stats, index, report)
        if method is None:
            continue
        if saved is not None and id(layer.weight) not in kept:
            kept.add(id(layer.weight))
            saved.keep(layer.weight)
        device = layer.weight.device
        if owners[position] == ranks.rank():
            pruned = method(matrix(layer).to(device), stats.get(name), target, pattern)
        else:
            pruned = torch.empty(matrix_shape(layer), device=device)
        set_matrix(layer, ranks.share_result(owners[position], pruned))


def _prune_block(block, call, inputs, target, pattern, saved, report):
    """Prune one block in place; return its pruned outputs (the next block's inputs), or None
    where no calibration runs (magnitude without OWL). `saved` (a Rollback, or None where the
    caller has the originals elsewhere) notes each weight before it changes (a 3-D experts
    parameter whole, once)."""
    start, index = time.perf_counter(), len(report.blocks)
    layers = block_layers(block)
    stats = _block_stats(block, layers, call, inputs, METHODS.get(report.method).needs)
    _prune_layers(layers, stats, target, pattern, saved, report, index)
    if saved is not None:
        saved.flush()
    fallback = [name for name in report.magnitude_fallback if name.startswith(f"block {index} ")]
    if fallback:
        log.warning("no calibration token reached %s: pruned by magnitude", ", ".join(fallback))
    # Counted from the stored tensors, not from what was meant to be pruned.
    zeros, total = count_zeros(layers)
    report.left_dense += [f"block {index} {name}" for name in unpruned_weights(block, layers)]
    outputs = _run_all(block, call, inputs) if inputs is not None else None
    seconds = time.perf_counter() - start
    report.blocks.append({"block": index, "target": target, "sparsity": zeros / max(total, 1),
                          "zeros": zeros, "params": total, "seconds": seconds})
    log.info("block %d: %.1f %% zero (target %.1f %%), %.1f s", index, 100 * zeros / max(total, 1),
             100 * target, seconds)
    return outputs


def finish_report(report: LLMPruneReport, started: float) -> None:
    """The overall sparsity over every block's pruned weights, and the time taken."""
    zeros, total = sum(b["zeros"] for b in report.blocks), sum(b["params"] for b in report.blocks)
    report.sparsity, report.seconds = zeros / max(total, 1), time.perf_counter() - started


def _calibrate(model, blocks, batches, device):
    """(BlockCall per block on `device`, block-0 inputs on `device`) from the model's forward."""
    home = model_device(model)
    batches = batches.to(home)
    calls = record_calls(model, blocks, batches[:1])
    inputs = first_block_inputs(model, blocks, batches)
    return to_device(calls, device), [x.to(device) for x in inputs]


def prune(model: nn.Module, batches: torch.Tensor, *, method: str = "wanda", sparsity: float = 0.5,
          pattern: str | None = None, allocation: str = "uniform", device=None,
          owl_threshold: float = 5.0, owl_lambda: float = 0.08) -> LLMPruneReport:
    """Prune every weight matrix of the model's blocks, block by block (see the module
    docstring). `pattern` "N:M" sets the sparsity to (M-N)/M; `allocation="owl"` spreads
    `sparsity` over blocks by their outliers (within ± owl_lambda). `device` runs each block
    there ("cuda"), the model staying where it is. A failure leaves the model as it was."""
    nm = _check(model, batches, method, sparsity, pattern, allocation)
    check_range("owl_lambda", owl_lambda, 0.0, 1.0)
    started, saved = time.perf_counter(), Rollback()
    sparsity = (nm[1] - nm[0]) / nm[1] if nm else float(sparsity)
    report = LLMPruneReport(method, pattern, allocation, 0.0, calibration=tuple(batches.shape))
    batches = ranks.share(batches)
    _, blocks = find_blocks(model)
    device = torch.device(device) if device else model_device(model)
    was_training = model.training
    model.eval()
    try:
        calibrated = METHODS.get(method).needs != "none" or allocation == "owl"
        calls, inputs = _calibrate(model, blocks, batches, device) if calibrated else ([None] * len(blocks), None)
        targets = [sparsity] * len(blocks)
        if allocation == "owl":
            targets = _owl_targets(blocks, calls, inputs, sparsity, owl_threshold, owl_lambda, device, report)
        if METHODS.get(method).needs == "none":
            inputs = None
        for block, call, target in zip(blocks, calls, targets):
            with on_device(block, device):
                inputs = _prune_block(block, call, inputs, target, nm, saved, report)
    except BaseException:
        saved.restore()
        raise
    finally:
        saved.close()
        model.train(was_training)
    finish_report(report, started)
    if report.not_reached:
        log.warning("left dense, never run by the calibration data: %s", ", ".join(report.not_reached))
    return report
