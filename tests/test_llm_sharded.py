"""llm.prune_sharded: a model pruned block by block from its safetensors shards, never whole in
memory, gives exactly what llm.prune gives on the whole model."""
import copy
import gc
import weakref

import pytest
import torch

from llm_helpers import build
from prunekit import PruneError, llm
from prunekit.llm import sharded

BATCHES = torch.randint(3, 200, (4, 32), generator=torch.Generator().manual_seed(5))
DECODERS = ["llama", "gemma3", "qwen2", "qwen3", "mistral", "phi3", "gpt2"]


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("method, pattern", [("wanda", None), ("sparsegpt", "2:4")])
def test_streamed_pruning_equals_pruning_the_whole_model(family, method, pattern, tmp_path):
    model = build(family)
    model.save_pretrained(tmp_path / "in", max_shard_size="40KB")
    assert len(list((tmp_path / "in").glob("*.safetensors"))) > 3
    whole = copy.deepcopy(model)
    expected = llm.prune(whole, BATCHES, method=method, pattern=pattern)
    report = llm.prune_sharded(tmp_path / "in", tmp_path / "out", BATCHES, method=method, pattern=pattern)
    assert report.sparsity == expected.sparsity and len(report.blocks) == len(expected.blocks)
    again = type(model).from_pretrained(tmp_path / "out").eval()
    for (name, a), (_, b) in zip(whole.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_only_one_block_is_in_memory_at_a_time(tmp_path, monkeypatch):
    build("llama").save_pretrained(tmp_path / "in", max_shard_size="40KB")
    alive, most = [], []
    load = sharded._load_block

    def counted(*args):
        gc.collect()
        most.append(sum(ref() is not None for ref in alive))
        block = load(*args)
        alive.append(weakref.ref(block))
        return block

    monkeypatch.setattr(sharded, "_load_block", counted)
    llm.prune_sharded(tmp_path / "in", tmp_path / "out", BATCHES)
    assert len(most) == 2 and max(most) == 0  # the previous block is gone before the next is read


def test_bad_requests_write_nothing(tmp_path):
    build("llama").save_pretrained(tmp_path / "in")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(PruneError, match="not empty"):
        llm.prune_sharded(tmp_path / "in", tmp_path / "full", BATCHES)
    with pytest.raises(PruneError, match="no model.safetensors"):
        llm.prune_sharded(tmp_path, tmp_path / "out", BATCHES)
    with pytest.raises(PruneError, match="not a multiple of M=3|pattern"):
        llm.prune_sharded(tmp_path / "in", tmp_path / "out", BATCHES, pattern="2:3")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


@pytest.mark.parametrize("family, head_on_disk", [("llama", True), ("gemma3", False)])
def test_the_shell_holds_no_block_and_no_untied_lm_head(family, head_on_disk, tmp_path):
    model = build(family)
    model.save_pretrained(tmp_path / "in", max_shard_size="40KB")
    shell, name, _, config, on_disk = sharded._shell(tmp_path / "in", torch.float32)
    assert not any(k.startswith(name + ".") for k in shell.state_dict())
    assert (on_disk == ["lm_head.weight"]) == head_on_disk
    assert shell.get_output_embeddings().weight.is_meta == head_on_disk
    assert config.num_hidden_layers == model.config.num_hidden_layers
    embed = shell.get_input_embeddings().weight
    assert torch.equal(embed, model.get_input_embeddings().weight)  # real weights, not a fresh init


def logits(model, x=BATCHES[:2]):
    with torch.no_grad():
        return model(input_ids=x).logits.float()


HALF = [("llama", torch.bfloat16), ("gemma3", torch.bfloat16), ("gpt2", torch.bfloat16), ("llama", torch.float16)]


@pytest.mark.parametrize("family, dtype", HALF)
@pytest.mark.parametrize("method, pattern", [("wanda", None), ("sparsegpt", "2:4")])
def test_half_precision_shards_stream_as_in_memory_and_are_written_in_their_dtype(family, dtype, method, pattern,
                                                                                 tmp_path):
    """The shell runs in the shards' dtype, like the blocks, so a bf16/fp16 model streams; every
    tensor is written in the dtype it was read in, and the result is the in-memory prune's."""
    build(family).to(dtype).save_pretrained(tmp_path / "in", max_shard_size="40KB")
    model = type(build(family)).from_pretrained(tmp_path / "in", dtype=dtype).eval()  # as a user loads it
    expected = llm.prune(model, BATCHES, method=method, pattern=pattern)
    report = llm.prune_sharded(tmp_path / "in", tmp_path / "out", BATCHES, method=method, pattern=pattern)
    assert report.sparsity == expected.sparsity
    read, written = sharded.Shards(tmp_path / "in").dtypes(), sharded.Shards(tmp_path / "out").dtypes()
    assert written == read and set(written.values()) == {dtype}
    again = type(model).from_pretrained(tmp_path / "out", dtype=dtype).eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    a, b = logits(model), logits(again)
    assert float((a - b).norm() / a.norm()) <= 1e-2


def test_a_shard_holding_fp32_norms_beside_bf16_weights_keeps_both(tmp_path):
    model = build("llama").to(torch.bfloat16)
    model.model.norm.float()
    model.save_pretrained(tmp_path / "in", max_shard_size="40KB")
    llm.prune_sharded(tmp_path / "in", tmp_path / "out", BATCHES)
    written = sharded.Shards(tmp_path / "out").dtypes()
    assert written["model.norm.weight"] == torch.float32
    assert written["model.embed_tokens.weight"] == written["model.layers.0.mlp.up_proj.weight"] == torch.bfloat16


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "deepseek_v3"])
def test_moe_checkpoints_stream_as_in_memory(family, tmp_path):
    """transformers 5 stores experts one by one and merges them as it loads: the streamed blocks
    are read through that conversion, every expert is pruned, and the result is llm.prune's."""
    from llm_helpers import build_moe
    model = build_moe(family)
    model.save_pretrained(tmp_path / "in", max_shard_size="100KB")
    expected = llm.prune(model, BATCHES, method="wanda")
    report = llm.prune_sharded(tmp_path / "in", tmp_path / "out", BATCHES, method="wanda")
    assert report.sparsity == expected.sparsity == pytest.approx(0.5, abs=1e-3)
    assert report.magnitude_fallback == expected.magnitude_fallback
    again = type(model).from_pretrained(tmp_path / "out").eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


def test_a_cut_off_shard_is_one_line_naming_the_file_and_writes_nothing(tmp_path):
    build("llama").to(torch.bfloat16).save_pretrained(tmp_path / "in", max_shard_size="40KB")
    shard = sorted((tmp_path / "in").glob("model-0000*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(PruneError, match=f"{shard.name}: not a readable safetensors file"):
        llm.prune_sharded(tmp_path / "in", tmp_path / "out", BATCHES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
