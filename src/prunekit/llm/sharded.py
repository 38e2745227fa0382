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
Mistral, Gemma-3, Phi-3, GPT-2 in transformers 5), and the MoE families (Mixtral, Qwen2/3-MoE,
OLMoE, gpt-oss, DeepSeek-V3), whose experts transformers stores one by one and merges on load.
"""
import contextlib
import copy
import json
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from prunekit._utils.hf_folder import reading
from prunekit.errors import PruneError
from prunekit.llm import ranks
from prunekit.llm.blocks import PassThrough, find_blocks, first_block_inputs, model_device, record_calls
from prunekit.llm.prune import (
    LLMPruneReport,
    _prune_block,
    check_options,
    check_pattern_fits,
    check_token_ids,
    finish_report,
)
from prunekit.structured.hf_config import LAYER_FIELDS
from prunekit.train.distributed import barrier, is_writer


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _common_float(dtypes: dict) -> torch.dtype:
    """The floating dtype most of the model's tensors are stored in (bf16 for most LLMs)."""
    floats = [d for d in dtypes.values() if d is not None]
    return max(set(floats), key=floats.count) if floats else torch.float32


@contextlib.contextmanager
def _open(path: Path, tensor: str | None = None):
    """safe_open, a damaged or cut-off shard refused in one line naming the file (and tensor)."""
    try:
        with safe_open(path, "pt") as f:
            yield f
    except (OSError, SafetensorError) as err:
        what = f" (tensor {tensor})" if tensor else ""
        raise PruneError(f"{path}{what}: not a readable safetensors file ({err}); the model's shards are damaged "
                         "or incomplete") from None


class Shards:
    """Tensors by name across a folder's safetensors files, read one at a time."""

    def __init__(self, folder: Path):
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            self.where = {k: folder / f for k, f in json.loads(index.read_text())["weight_map"].items()}
        elif (folder / "model.safetensors").is_file():
            with _open(folder / "model.safetensors") as f:
                self.where = dict.fromkeys(f.keys(), folder / "model.safetensors")
        else:
            raise PruneError(f"{folder}: no model.safetensors or model.safetensors.index.json")

    def dtypes(self) -> dict:
        """{name: torch dtype} of every tensor, from the files' headers (no tensor is read)."""
        out = {}
        for path in sorted(set(self.where.values())):
            with _open(path) as f:
                out.update({name: f.get_slice(name).get_dtype() for name in f.keys()})
        return {name: _DTYPES.get(code) for name, code in out.items()}

    def read(self, names) -> dict:
        out = {}
        for name in names:
            with _open(self.where[name], name) as f:
                out[name] = f.get_tensor(name)
        return out


def _kinds(config) -> list:
    """The config's per-block layer types (Gemma-3's sliding and full attention), or []."""
    kinds = getattr(config, "layer_types", None)
    return list(kinds) if isinstance(kinds, list) else []


def _with_blocks(config, kinds: list):
    """A copy of `config` describing blocks of these kinds, or one block where it has no kinds."""
    small = copy.deepcopy(config)
    if kinds:
        small.layer_types = kinds
    for field in LAYER_FIELDS:
        if hasattr(small, field):
            setattr(small, field, len(kinds) or 1)
    return small


def _shell(folder: Path, dtype: torch.dtype):
    """(the model with its blocks' list emptied of weights, the list's name, the block class,
    the config, the names of the weights left on disk): read with one block (one of each layer
    type), in the dtype the shards mostly hold (the blocks keep theirs: a bf16 model runs in
    bf16 as it does in memory), then told it has all again. transformers reads the weights one
    at a time onto an empty model and computes the buffers the shards do not hold (rotary
    tables), so nothing is built twice; the LM head, which the recorded forward never reaches,
    stays on disk."""
    import transformers
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    small = _with_blocks(config, list(dict.fromkeys(_kinds(config))))  # one block of each kind (rotary tables per kind)
    with _quiet_loading(transformers):
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            folder, config=small, dtype=dtype, local_files_only=True, output_loading_info=True)
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


def _load_block(shell, block_class, config, index: int, name: str, shards: Shards) -> nn.Module:
    """Block `index` alone: built on the meta device, its weights read from the shards. Where the
    stored names are not the module's (transformers 5 saves MoE experts one by one and merges them
    into 3-D tensors as it loads), transformers' own loading reads it (_converted_block)."""
    with torch.device("meta"):
        block = block_class(config, layer_idx=index)
    prefix = f"{name}.{index}."
    state = {k[len(prefix):]: v for k, v in shards.read([k for k in shards.where if k.startswith(prefix)]).items()}
    if set(state) != set(block.state_dict()):
        return _converted_block(shell, config, index, name, state)
    block.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in block.buffers()):
        raise PruneError(f"{block_class.__name__} keeps buffers that are not in the shards: it cannot be streamed")
    return block.eval()


def _converted_block(shell, config, index: int, name: str, state: dict) -> nn.Module:
    """Block `index` read by from_pretrained into a model of that one block (the stored names
    converted as transformers converts them), then taken out of it."""
    import transformers
    small = _with_blocks(config, _kinds(config)[index:index + 1])
    with _quiet_loading(transformers):
        one = type(shell).from_pretrained(None, config=small, state_dict={f"{name}.0.{k}": v for k, v in state.items()},
                                          dtype=shell.dtype)
    block = find_blocks(one)[1][0]
    for module in block.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = index  # the key/value cache and per-layer choices read it
    return block.eval()


def _record(model, name: str, block_class, config, batches: torch.Tensor):
    """(BlockCall per block, block 0's input per sequence) from the shell's own forward, the
    blocks' list filled with stand-ins (built on the meta device for their plain attributes)."""
    n = next(getattr(config, f) for f in LAYER_FIELDS if hasattr(config, f))
    with torch.device("meta"):
        stand_ins = nn.ModuleList(PassThrough(block_class(config, layer_idx=i)) for i in range(n))
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, stand_ins)
    batches = batches.to(model_device(model))
    return record_calls(model, stand_ins, batches[:1]), first_block_inputs(model, stand_ins, batches)


def _unique_state(module: nn.Module, prefix="") -> dict:
    """state_dict without the second name of a tied tensor (safetensors stores each once)."""
    seen, out = set(), {}
    for key, tensor in module.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            out[prefix + key] = tensor.contiguous()
    return out


def _write(tmp: Path, filename: str, state: dict, weight_map: dict) -> None:
    save_file(state, tmp / filename, metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(state, filename))


def _finish(model, config, folder: Path, tmp: Path, out: Path, weight_map: dict, n: int, on_disk: list,
            shards: Shards) -> None:
    """The shell's own weights, each in the dtype its input shard held (with those left on disk
    copied over), the shard index, the config and the other files; then rename."""
    dtypes = shards.dtypes()
    state = {k: v.to(dtypes.get(k) or v.dtype) for k, v in _unique_state(model).items() if k not in on_disk}
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
    nm = check_options(batches, method, sparsity, pattern)
    if out.exists() and any(out.iterdir()):
        raise PruneError(f"{out} exists and is not empty: give a new folder")
    barrier()  # every rank has checked `out` before rank 0 can create it
    with reading(folder):  # a cut-off config.json or index, an unknown model type: one line naming the folder
        shards = Shards(folder)
        model, name, block_class, config, on_disk = _shell(folder, _common_float(shards.dtypes()))
    check_token_ids(model, batches)  # the shell holds the real embedding: before any block is read
    calls, inputs = _record(model, name, block_class, config, ranks.share(batches))
    report = LLMPruneReport(method, pattern, "uniform", 0.0, calibration=tuple(batches.shape))
    target = (nm[1] - nm[0]) / nm[1] if nm else float(sparsity)
    started, weight_map, n = time.perf_counter(), {}, len(calls)
    tmp = out.parent / f".{out.name}.partial"
    writer = is_writer()  # under torchrun every rank prunes (its share of the sequences), rank 0 writes
    if writer:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    try:
        for index in range(n):
            block = _load_block(model, block_class, config, index, name, shards)
            check_pattern_fits(index, block, nm, pattern)
            inputs = _prune_block(block, calls[index], inputs, target, nm, None, report)  # the shards are the rollback
            if writer:
                _write(tmp, f"model-{index + 1:05d}-of-{n + 1:05d}.safetensors",
                       _unique_state(block, f"{name}.{index}."), weight_map)
            del block  # before the next is read: one block in memory at a time
        if writer:
            _finish(model, config, folder, tmp, out, weight_map, n, on_disk, shards)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    finish_report(report, started)
    return report
