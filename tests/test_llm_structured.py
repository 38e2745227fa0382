"""llm.prune_structured: heads (whole GQA groups, or query heads out of every group), FFN neurons and blocks removed, the config
following (every head layout: test_llm_heads.py), so that every family round-trips through save_pretrained / from_pretrained and
generates; the cut is exactly the dense model with those units silenced; recovery re-fits."""
import copy

import pytest
import torch

from llm_helpers import FAMILIES, build, layer_inputs, tiny_llama
from prunekit import PruneError, llm
from prunekit.llm.layers import matrix

BATCHES = torch.randint(3, 200, (6, 32), generator=torch.Generator().manual_seed(2))
X = torch.randint(3, 200, (1, 20), generator=torch.Generator().manual_seed(3))
HEADLESS = {"bert", "distilbert", "roberta", "gpt2"}  # head size = hidden / heads: refused
CUTS = {"ffn": {"ffn": 0.25}, "layers": {"layers": 1}, "heads": {"heads": 0.5},
        "all+recover": {"ffn": 0.5, "layers": 1, "heads": 0.5, "recover": True}}


def output(model, x=X):
    with torch.no_grad():
        out = model(input_ids=x)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


ROUND_TRIPS = [(family, cut) for family in sorted(FAMILIES) for cut in sorted(CUTS)
               if not (family in HEADLESS and cut == "heads")]  # refused there: see the next test


@pytest.mark.parametrize("family, cut", ROUND_TRIPS)
def test_every_family_round_trips_and_generates_after_the_cut(family, cut, tmp_path):
    kwargs = {k: v for k, v in CUTS[cut].items() if not (family in HEADLESS and k == "heads")}
    model = build(family)
    report = llm.prune_structured(model, BATCHES, **kwargs)
    assert report.params_after < report.params_before
    model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    assert torch.allclose(output(model), output(again), atol=1e-6)
    assert sum(p.numel() for p in again.parameters()) == report.params_after
    if model.can_generate():
        assert again.generate(input_ids=X, max_new_tokens=4, do_sample=False).shape == (1, 24)


@pytest.mark.parametrize("family", sorted(HEADLESS))
def test_heads_are_refused_where_the_config_cannot_say_it_and_nothing_changes(family):
    model = build(family)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(PruneError, match="cannot describe fewer heads"):
        llm.prune_structured(model, BATCHES, heads=0.5, ffn=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def silenced(dense, removed):
    """The dense model with the removed units' contributions zeroed (their o_proj / down_proj columns)."""
    model = copy.deepcopy(dense)
    config = dense.config
    per_group = config.num_attention_heads // config.num_key_value_heads * config.head_dim
    with torch.no_grad():
        for index, cut in removed.items():
            block = model.model.layers[index]
            for group in cut.get("kv_groups", []):
                block.self_attn.o_proj.weight[:, group * per_group:(group + 1) * per_group] = 0
            for head in cut.get("query_heads", []):
                block.self_attn.o_proj.weight[:, head * config.head_dim:(head + 1) * config.head_dim] = 0
            block.mlp.down_proj.weight[:, cut.get("ffn", [])] = 0
    return model


def test_the_cut_model_is_the_dense_model_with_those_units_silenced():
    dense = tiny_llama(layers=3)
    dense.config.head_dim = dense.config.hidden_size // dense.config.num_attention_heads
    model = copy.deepcopy(dense)
    report = llm.prune_structured(model, BATCHES, heads=0.5, ffn=0.25)
    assert model.config.num_attention_heads == 2 and model.config.num_key_value_heads == 1
    assert model.config.intermediate_size == 96 and all(len(c["ffn"]) == 32 for c in report.removed.values())
    assert torch.allclose(output(model), output(silenced(dense, report.removed)), atol=1e-5)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - HEADLESS))
def test_one_key_value_head_loses_query_heads_from_its_group_and_round_trips(family, tmp_path):
    """Gemma-3 270M's layout (4 query heads on 1 key/value head): heads=0.5 takes 2 query heads."""
    model = build(family, num_key_value_heads=1)
    report = llm.prune_structured(model, BATCHES, heads=0.5)
    assert report.heads == (2, 1) and all(len(c["query_heads"]) == 2 for c in report.removed.values())
    model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    assert again.config.num_attention_heads == 2 and again.config.num_key_value_heads == 1
    assert torch.allclose(output(model), output(again), atol=1e-6)
    assert again.generate(input_ids=X, max_new_tokens=4, do_sample=False).shape == (1, 24)


def test_query_heads_cut_is_the_dense_model_with_those_heads_silenced():
    dense = tiny_llama(layers=3)  # hidden 48 takes 3 heads (Llama's config refuses hidden % heads != 0)
    dense.config.hidden_size, dense.config.num_key_value_heads, dense.config.head_dim = 48, 1, 16
    dense = type(dense)(dense.config).eval()
    model = copy.deepcopy(dense)
    report = llm.prune_structured(model, BATCHES, heads=0.25)
    assert model.config.num_attention_heads == 3 and model.model.layers[0].self_attn.num_key_value_groups == 3
    assert torch.allclose(output(model), output(silenced(dense, report.removed)), atol=1e-5)


def test_gqa_groups_stay_whole_and_keep_their_query_heads():
    dense = tiny_llama()  # 4 query heads over 2 key/value heads
    model = copy.deepcopy(dense)
    report = llm.prune_structured(model, BATCHES, heads=0.5)
    d = dense.config.hidden_size // dense.config.num_attention_heads
    for index, cut in report.removed.items():
        (group,) = cut["kv_groups"]
        kept = 1 - group
        attn, before = model.model.layers[index].self_attn, dense.model.layers[index].self_attn
        assert torch.equal(attn.k_proj.weight, before.k_proj.weight[kept * d:(kept + 1) * d])
        assert torch.equal(attn.q_proj.weight, before.q_proj.weight[kept * 2 * d:(kept + 1) * 2 * d])


def test_the_block_that_changes_its_input_least_is_removed():
    model = tiny_llama(layers=3)
    with torch.no_grad():  # block 1 adds nothing to its input: influence 0
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    before = output(model)
    report = llm.prune_structured(model, BATCHES, layers=1)
    assert report.removed_layers == [1] and report.block_influence[1] == pytest.approx(0, abs=1e-6)
    assert model.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    assert torch.allclose(output(model), before, atol=1e-5)


@pytest.mark.parametrize("family, layer", [("llama", "mlp.down_proj"), ("gpt2", "mlp.c_proj"),
                                           ("bert", "output.dense")])
def test_recovery_is_the_least_squares_fit_on_the_calibration_inputs(family, layer):
    """Block 0 sees the dense inputs: its re-fitted layer matches lstsq's optimum (with an
    intercept where the layer has a bias) and beats plain slicing."""
    dense = build(family)
    blocks = {"llama": lambda m: m.model.layers, "gpt2": lambda m: m.transformer.h, "bert": lambda m: m.encoder.layer}
    target = blocks[family](dense)[0].get_submodule(layer)
    x = layer_inputs(dense, target, BATCHES)
    y = x @ matrix(target).t()
    errors, keep = {}, None
    for recover in (False, True):
        model = copy.deepcopy(dense)
        report = llm.prune_structured(model, BATCHES, ffn=0.5, recover=recover)
        cut = blocks[family](model)[0].get_submodule(layer)
        keep = [j for j in range(x.shape[1]) if j not in report.removed[0]["ffn"]]
        bias = cut.bias.detach() - (target.bias.detach() if target.bias is not None else 0) if cut.bias is not None else 0
        errors[recover] = float((x[:, keep] @ matrix(cut).t() + bias - y).pow(2).mean())
    design = x[:, keep] if target.bias is None else torch.cat([x[:, keep], torch.ones(len(x), 1)], 1)
    optimum = float((design @ torch.linalg.lstsq(design.double(), y.double()).solution.float() - y).pow(2).mean())
    assert errors[True] < errors[False] and errors[True] <= 1.05 * optimum + 1e-12, (errors, optimum)


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": 2}, "at least one must stay"),
    ({"heads": 0.1}, "heads=0.1 removes no head of 4"),
    ({"ffn": 1.0}, r"ffn must be a number in \[0, 1\)"),
    ({"ffn": 0.001}, "removes no neuron"),
])
def test_bad_requests_are_one_line_and_change_nothing(kwargs, message):
    model = tiny_llama()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(PruneError, match=message):
        llm.prune_structured(model, BATCHES, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_failure_halfway_puts_the_model_and_its_config_back(monkeypatch):
    model = tiny_llama(layers=3)
    before, config = copy.deepcopy(model.state_dict()), model.config.to_dict()
    cuts = []

    def fail_on_the_second_block(block, stats, neurons, recover):
        if cuts:
            raise MemoryError("simulated")
        cuts.append(original(block, stats, neurons, recover))
        return cuts[-1]

    from prunekit.llm import structured
    original = structured._cut_ffn
    monkeypatch.setattr(structured, "_cut_ffn", fail_on_the_second_block)
    with pytest.raises(MemoryError):
        llm.prune_structured(model, BATCHES, ffn=0.25, heads=0.5, layers=1)
    assert model.config.to_dict() == config and model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

