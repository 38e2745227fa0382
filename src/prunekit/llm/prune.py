"""llm.prune: one-shot pruning of a Hugging Face transformer, block by block.

    model, tokenizer = llm.load(folder)
    batches = llm.calibration(tokenizer, text, n=64, seq_len=512)
    report = llm.prune(model, batches, method="wanda", sparsity=0.5)       # or pattern="2:4"

Block i is pruned on the inputs that the already pruned blocks before it produce, then its
pruned outputs become block i+1's inputs (as Wanda's and SparseGPT's papers do). Peak memory
is the model, the calibration activations (two copies), one block's statistics and, so that a
failing call can put the model back, a copy of the weights changed so far. Pruned weights are
plain zeros in the model's own tensors: `save_pretrained` writes them as they are.
"""
import logging
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
from prunekit.llm.layers import block_layers, collect, matrix, set_matrix
from prunekit.llm.methods import METHODS
from prunekit.llm.owl import outlier_ratio, owl_sparsities

log = logging.getLogger(__name__)
ALLOCATIONS = ("uniform", "owl")


@dataclass
class LLMPruneReport:
    method: str
    pattern: str | None
    allocation: str
    sparsity: float                      # achieved, over the pruned matrices
    blocks: list = field(default_factory=list)     # [{"block", "target", "sparsity", "seconds"}]
    not_reached: list = field(default_factory=list)  # layers the calibration never ran: left dense
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


def _check(model, batches, method, sparsity, pattern, allocation):
    METHODS.get(method)
    _check_batches(batches)
    if allocation not in ALLOCATIONS:
        raise PruneError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    nm = parse_pattern(pattern)
    if nm is not None and allocation != "uniform":
        raise PruneError("an N:M pattern fixes every layer's sparsity: use allocation='uniform'")
    if nm is None:
        check_range("sparsity", sparsity, 0.0, 1.0, "[)")
    _, blocks = find_blocks(model)
    for index, block in enumerate(blocks):
        check_pattern_fits(index, block, nm, pattern)
    return nm


def check_pattern_fits(index, block, nm, pattern) -> None:
    """Every pruned matrix of the block has a multiple of M inputs (N:M groups run along them)."""
    for name, layer in block_layers(block).items():
        if nm is not None and matrix(layer).shape[1] % nm[1]:
            raise PruneError(f"block {index} {name}: {matrix(layer).shape[1]} inputs are not a multiple "
                             f"of M={nm[1]} for pattern {pattern}")


def _run_all(block: nn.Module, call: BlockCall, inputs: list) -> list:
    with torch.no_grad():
        return [call.run(block, x) for x in inputs]


def _block_stats(block, layers, call, inputs, needs):
    if needs == "none":
        return {}
    return collect(block, layers, lambda: _run_all(block, call, inputs), gram=needs == "hessian")


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


def _prune_block(block, call, inputs, target, pattern, saved, report):
    """Prune one block in place; return its pruned outputs (the next block's inputs), or None
    where no calibration runs (magnitude without OWL)."""
    start, index = time.perf_counter(), len(report.blocks)
    prune_layer = METHODS.get(report.method)
    layers = block_layers(block)
    stats = _block_stats(block, layers, call, inputs, prune_layer.needs)
    zeros = total = 0
    for name, layer in layers.items():
        if prune_layer.needs != "none" and name not in stats:
            report.not_reached.append(f"block {index} {name}")
            continue
        saved.append((layer, layer.weight.detach().to("cpu", copy=True)))
        pruned = prune_layer(matrix(layer).to(layer.weight.device), stats.get(name), target, pattern)
        set_matrix(layer, pruned)
        zeros, total = zeros + int((pruned == 0).sum()), total + pruned.numel()
    outputs = _run_all(block, call, inputs) if inputs is not None else None
    seconds = time.perf_counter() - start
    report.blocks.append({"block": index, "target": target, "sparsity": zeros / max(total, 1),
                          "zeros": zeros, "params": total, "seconds": seconds})
    log.info("block %d: %.1f %% zero (target %.1f %%), %.1f s", index, 100 * zeros / max(total, 1),
             100 * target, seconds)
    return outputs


def _restore(saved: list) -> None:
    with torch.no_grad():
        for layer, weight in saved:
            layer.weight.copy_(weight)


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
    started, saved = time.perf_counter(), []
    sparsity = (nm[1] - nm[0]) / nm[1] if nm else float(sparsity)
    report = LLMPruneReport(method, pattern, allocation, 0.0, calibration=tuple(batches.shape))
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
        _restore(saved)
        raise
    finally:
        model.train(was_training)
    zeros, total = sum(b["zeros"] for b in report.blocks), sum(b["params"] for b in report.blocks)
    report.sparsity, report.seconds = zeros / max(total, 1), time.perf_counter() - started
    if report.not_reached:
        log.warning("left dense, never run by the calibration data: %s", ", ".join(report.not_reached))
    return report
