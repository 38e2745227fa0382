"""llm.prune_sharded: one-shot pruning of a model larger than memory, block by block from its
safetensors shards to new shards.

The model is never whole in memory. A shell holds what lies outside the blocks (embeddings,
final norm, LM head, rotary tables) with the real weights, and in place of the blocks
recorders that pass the hidden states through and note the arguments the model gives each
block (so that the model's own forward still computes masks and position embeddings). Then
block i alone is built, its weights read from the shards, pruned on the outputs of the pruned
blocks before it (as llm.prune does), written to its own shard and dropped. Peak memory is the
shell, one block, and the calibration activations. The output folder is a Hugging Face folder
(config, shards and their index, tokenizer files) that from_pretrained reads.

Families: those whose block class is built as Block(config, layer_idx) (Llama, Qwen2/3,
Mistral, Gemma-3, Phi-3, GPT-2 in transformers 5).
"""
import contextlib
import copy
import json
import shutil
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from prunekit._utils.validate import check_range
from prunekit.errors import PruneError
from prunekit.llm.blocks import BlockCall, find_blocks, model_device
from prunekit.llm.methods import METHODS
from prunekit.llm.prune import LLMPruneReport, _check_batches, _prune_block, check_pattern_fits, parse_pattern
from prunekit.structured.hf_config import LAYER_FIELDS


class Shards:
    """Tensors by name across a folder's safetensors files, read one at a time."""

    def __init__(self, folder: Path):
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            self.where = {k: folder / f for k, f in json.loads(index.read_text())["weight_map"].items()}
        elif (folder / "model.safetensors").is_file():
            with safe_open(folder / "model.safetensors", "pt") as f:
                self.where = dict.fromkeys(f.keys(), folder / "model.safetensors")
        else:
            raise PruneError(f"{folder}: no model.safetensors or model.safetensors.index.json")

    def read(self, names) -> dict:
        out = {}
        for name in names:
            with safe_open(self.where[name], "pt") as f:
                out[name] = f.get_tensor(name)
        return out


class _Recorder(nn.Module):
    """Stands for block `index`: notes its arguments (first sequence) and block 0's input (every
    sequence), passes the hidden states through, and stops the forward once nothing is left to
    note (the LM head never runs)."""

    def __init__(self, index, calls, inputs):
        super().__init__()
        self.index, self.calls, self.inputs = index, calls, inputs

    def forward(self, hidden, *args, **kwargs):
        if self.index == 0:
            self.inputs.append(hidden.detach())
        if self.calls[self.index] is None:
            self.calls[self.index] = BlockCall(args, kwargs)
        if all(c is not None for c in self.calls):
            raise _Stop
        return hidden


class _Stop(Exception):
    pass


def _shell(folder: Path):
    """(the model with its blocks' list emptied of weights, the list's name, the block class,
    the config, the names of the weights left on disk): read with one block (one of each layer
    type), then told it has all again. transformers reads the weights one at a time onto an
    empty model and computes the buffers the shards do not hold (rotary tables), so nothing is
    built twice; the LM head, which the recorded forward never reaches, stays on disk."""
    import transformers
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    small = copy.deepcopy(config)
    for field in LAYER_FIELDS:
        if hasattr(small, field):
            setattr(small, field, 1)
    if isinstance(getattr(small, "layer_types", None), list):  # one block of each kind (rotary tables per kind)
        small.layer_types = list(dict.fromkeys(small.layer_types))
        for field in LAYER_FIELDS:
            if hasattr(small, field):
                setattr(small, field, len(small.layer_types))
    with _quiet_loading(transformers):
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            folder, config=small, dtype=torch.float32, local_files_only=True, output_loading_info=True)
    name, blocks = find_blocks(model)
    block_class = type(blocks[0])
    lacking = [k for k in info["missing_keys"] if not k.startswith(name + ".")]
    if lacking:
        raise PruneError(f"{folder}: the shards lack {lacking[:3]}")
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, nn.ModuleList())  # the loaded blocks go
    for field, value in vars(config).items():  # every module holding the config sees all blocks again
        if not field.startswith("_"):          # (the attention implementation chosen at build stays)
            setattr(model.config, field, value)
    return model.eval(), name, block_class, model.config, _leave_head_on_disk(model)


@contextlib.contextmanager
def _quiet_loading(transformers):
    """from_pretrained with fewer blocks than the shards hold reports the others as unexpected."""
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def _leave_head_on_disk(model) -> list:
    """Free an untied LM head (its weight becomes an empty meta tensor) and return the names
    under which _finish copies it from the input shards."""
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or head.weight is embed.weight:
        return []
    names = [n for n, p in model.named_parameters() if p is head.weight or p is getattr(head, "bias", None)]
    head.weight = nn.Parameter(head.weight.to("meta"), requires_grad=False)
    if getattr(head, "bias", None) is not None:
        head.bias = nn.Parameter(head.bias.to("meta"), requires_grad=False)
    return names


def _load_block(block_class, config, index: int, name: str, shards: Shards) -> nn.Module:
    """Block `index` alone: built on the meta device, its weights read from the shards."""
    with torch.device("meta"):
        block = block_class(config, layer_idx=index)
    prefix = f"{name}.{index}."
    state = {k[len(prefix):]: v for k, v in shards.read([k for k in shards.where if k.startswith(prefix)]).items()}
    block.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in block.buffers()):
        raise PruneError(f"{block_class.__name__} keeps buffers that are not in the shards: it cannot be streamed")
    return block.eval()


def _record(model, name: str, n: int, batches: torch.Tensor):
    """(BlockCall per block, block 0's input per sequence) from the shell's own forward."""
    calls, inputs = [None] * n, []
    parent, _, attr = name.rpartition(".")
    holder = model.get_submodule(parent) if parent else model
    setattr(holder, attr, nn.ModuleList(_Recorder(i, calls, inputs) for i in range(n)))
    with torch.no_grad():
        for row in batches.to(model_device(model)):
            try:
                model(input_ids=row.unsqueeze(0), use_cache=False)
            except _Stop:
                pass
    if None in calls or len(inputs) != len(batches):
        raise PruneError("the model's forward did not reach every block")
    return calls, inputs


def _unique_state(module: nn.Module, prefix="") -> dict:
    """state_dict without the second name of a tied tensor (safetensors stores each once)."""
    seen, out = set(), {}
    for key, tensor in module.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            out[prefix + key] = tensor.contiguous()
    return out


def _check_options(batches, method, sparsity, pattern):
    METHODS.get(method)
    _check_batches(batches)
    nm = parse_pattern(pattern)
    if nm is None:
        check_range("sparsity", sparsity, 0.0, 1.0, "[)")
    return nm


def _write(tmp: Path, filename: str, state: dict, weight_map: dict) -> None:
    save_file(state, tmp / filename, metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(state, filename))


def _finish(model, config, folder: Path, tmp: Path, out: Path, weight_map: dict, n: int, on_disk: list,
            shards: Shards) -> None:
    """The shell's own weights (with those left on disk copied over), the shard index, the config
    and the other files; then rename."""
    state = {k: v for k, v in _unique_state(model).items() if k not in on_disk}
    state.update(shards.read(on_disk))
    _write(tmp, f"model-{n + 1:05d}-of-{n + 1:05d}.safetensors", state, weight_map)
    index = {"metadata": {"format": "pt"}, "weight_map": dict(sorted(weight_map.items()))}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(tmp)
    for path in folder.iterdir():  # tokenizer, generation config, licences
        if path.is_file() and not path.name.startswith("model") and path.name != "config.json":
            shutil.copyfile(path, tmp / path.name)
    if out.exists():
        out.rmdir()  # checked empty before
    tmp.rename(out)


def prune_sharded(folder, out, batches: torch.Tensor, *, method: str = "wanda", sparsity: float = 0.5,
                  pattern: str | None = None) -> LLMPruneReport:
    """Prune the model in `folder` (safetensors shards) block by block into a new folder `out`;
    see the module docstring. Same method, sparsity and pattern as llm.prune (uniform)."""
    folder, out = Path(folder), Path(out)
    nm = _check_options(batches, method, sparsity, pattern)
    if out.exists() and any(out.iterdir()):
        raise PruneError(f"{out} exists and is not empty: give a new folder")
    shards = Shards(folder)
    model, name, block_class, config, on_disk = _shell(folder)
    n = next(getattr(config, f) for f in LAYER_FIELDS if hasattr(config, f))
    calls, inputs = _record(model, name, n, batches)
    report = LLMPruneReport(method, pattern, "uniform", 0.0, calibration=tuple(batches.shape))
    target = (nm[1] - nm[0]) / nm[1] if nm else float(sparsity)
    started, weight_map = time.perf_counter(), {}
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for index in range(n):
            block = _load_block(block_class, config, index, name, shards)
            check_pattern_fits(index, block, nm, pattern)
            inputs = _prune_block(block, calls[index], inputs, target, nm, [], report)
            _write(tmp, f"model-{index + 1:05d}-of-{n + 1:05d}.safetensors", _unique_state(block, f"{name}.{index}."),
                   weight_map)
            del block  # before the next is read: one block in memory at a time
        _finish(model, config, folder, tmp, out, weight_map, n, on_disk, shards)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    zeros, total = sum(b["zeros"] for b in report.blocks), sum(b["params"] for b in report.blocks)
    report.sparsity, report.seconds = zeros / max(total, 1), time.perf_counter() - started
    return report
