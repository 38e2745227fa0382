"""A transformer as a stack of blocks, run one block at a time on calibration activations.

The one-shot methods (Wanda, SparseGPT) prune block by block: block i is pruned on the inputs
that the already *pruned* blocks 0..i-1 produce, as both papers do. To do that without writing
a forward per model family, the model's own forward is run once and stopped at the first
block, and each block's other arguments (attention mask, rotary position embeddings, position
ids: what the family passes, per layer type where it differs, as Gemma-3's sliding and global
layers do) are recorded as the model passes them. They depend only on the sequence length, so
they are recorded once, on one calibration sequence, and reused for every sequence.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.errors import PruneError


class _Stop(Exception):
    """Raised from a block's pre-hook to end the model's forward once what is needed is read."""


@dataclass
class BlockCall:
    """How the model calls one block: the arguments after the hidden states, and the keywords."""
    args: tuple
    kwargs: dict

    def run(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        out = block(hidden, *self.args, **self.kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out


def find_blocks(model: nn.Module) -> tuple:
    """(name, ModuleList) of the model's repeated blocks: the list of modules of one class
    that holds the most parameters (decoder layers, encoder layers, GPT-2's `h`)."""
    best, best_size = None, 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = (name, module), size
    if best is None:
        raise PruneError(f"{type(model).__name__} has no list of repeated blocks to prune block by block")
    return best


def _hidden_of(args: tuple, kwargs: dict):
    """(hidden states, the other positional args, the keywords without the hidden states)."""
    if args:
        return args[0], tuple(args[1:]), dict(kwargs)
    kwargs = dict(kwargs)
    return kwargs.pop("hidden_states"), (), kwargs


def _forward_kwargs(model: nn.Module) -> dict:
    """No key/value cache while calibrating: the blocks are re-run outside the model."""
    return {"use_cache": False} if getattr(model.config, "use_cache", None) is not None else {}


def _run_until_stopped(model: nn.Module, input_ids: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            model(input_ids=input_ids, **_forward_kwargs(model))
    except _Stop:
        return
    raise PruneError("the model's forward never reached its blocks")


class PassThrough(nn.Module):
    """Stands for a block while the model's forward is run only to read what it passes the
    blocks: returns the hidden states unchanged (no block computes), and carries the block's
    plain attributes (Gemma-3 and ModernBERT's forwards read `attention_type` off the layer)."""

    def __init__(self, block: nn.Module | None = None):
        super().__init__()
        for key, value in vars(block or nn.Module()).items():
            if not key.startswith("_") and isinstance(value, (str, int, float, bool, type(None))):
                setattr(self, key, value)

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@contextmanager
def standing_in(blocks: nn.ModuleList):
    """The list's blocks replaced by PassThrough stand-ins, put back afterwards."""
    originals = list(blocks)
    for index, block in enumerate(originals):
        blocks[index] = PassThrough(block)
    try:
        yield blocks
    finally:
        for index, block in enumerate(originals):
            blocks[index] = block


def record_calls(model: nn.Module, blocks: nn.ModuleList, input_ids: torch.Tensor) -> list:
    """The BlockCall of every block, read from one forward of the model on `input_ids` (1, L)
    with the blocks standing aside: no block computes, so this costs the embedding alone, on
    the model's own device, however large the model. A family whose forward needs what its
    blocks return (DeBERTa-v2 reads a tuple) is read with its real blocks instead."""
    try:
        with standing_in(blocks):
            return _record(model, blocks, input_ids)
    except (TypeError, IndexError, AttributeError, ValueError, RuntimeError) as err:
        if all(isinstance(block, PassThrough) for block in blocks):  # a streamed shell has no real blocks
            raise PruneError(f"{type(model).__name__}'s forward needs what its blocks return ({err}): it cannot be "
                             "streamed block by block; prune it in memory with llm.prune") from None
        return _record(model, blocks, input_ids)


def _record(model: nn.Module, blocks: nn.ModuleList, input_ids: torch.Tensor) -> list:
    calls, handles = [None] * len(blocks), []

    def recorder(index):
        def hook(module, args, kwargs):
            _, rest, keywords = _hidden_of(args, kwargs)
            calls[index] = BlockCall(rest, keywords)
            if index == len(blocks) - 1:
                raise _Stop
        return hook

    try:
        for index, block in enumerate(blocks):
            handles.append(block.register_forward_pre_hook(recorder(index), with_kwargs=True))
        _run_until_stopped(model, input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def first_block_inputs(model: nn.Module, blocks: nn.ModuleList, batches: torch.Tensor) -> list:
    """The hidden states entering block 0 for each calibration sequence: a list of (1, L, d)."""
    inputs = []

    def hook(module, args, kwargs):
        inputs.append(_hidden_of(args, kwargs)[0].detach())
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for row in batches:
            _run_until_stopped(model, row.unsqueeze(0))
    finally:
        handle.remove()
    return inputs


def to_device(value, device):
    """Tensors moved to `device`, inside tuples, lists and dicts too; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextmanager
def on_device(module: nn.Module, device):
    """Run `module` on `device` inside the block, then move it back where it was."""
    home = model_device(module)
    if device is None or torch.device(device) == home:
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to(home)
