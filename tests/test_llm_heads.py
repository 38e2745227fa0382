"""Heads for every attention layout: llm.prune_structured cuts whole heads where the family's
config can say it (head_dim, T5's d_kv) and the result reloads
with the same outputs; where it cannot (head size = hidden / heads) it refuses and changes
nothing. The generic pk.prune_structured on the same families reloads or refuses, never
returns a model that save_pretrained / from_pretrained would break."""
import copy
import weakref

import pytest
import torch

import prunekit as pk
from llm_helpers import FAMILIES, HEAD_FAMILIES, build, tiny_llama
from prunekit import PruneError, llm
from prunekit.llm import families, structured
from prunekit.llm.blocks import find_blocks

IDS = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(2))
X = torch.randint(3, 200, (1, 12), generator=torch.Generator().manual_seed(3))
PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
ALL = sorted({**FAMILIES, **HEAD_FAMILIES})
# no head size field the family reads (DeBERTa-v2's output projection is hidden x hidden)
HIDDEN_OVER_HEADS = {"bert", "roberta", "distilbert", "albert", "deberta-v2", "gpt2", "modernbert"}


def calibration(family):
    return PIXELS if family == "vit" else IDS


def inputs(family) -> dict:
    if family == "vit":
        return {"pixel_values": PIXELS[:1]}
    return {"input_ids": X, "decoder_input_ids": X} if family == "t5" else {"input_ids": X}


def output(model, family):
    with torch.no_grad():
        out = model(**inputs(family))
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def unchanged(model, before) -> bool:
    state = model.state_dict()
    return state.keys() == before.keys() and all(torch.equal(before[k], v) for k, v in state.items())


def reloads(model, family, folder) -> bool:
    model.save_pretrained(folder)
    again = type(model).from_pretrained(folder).eval()
    return torch.allclose(output(model, family), output(again, family), atol=1e-5)


@pytest.mark.parametrize("family", ALL)
def test_heads_reload_with_the_same_outputs_or_are_refused_where_the_config_cannot_say_them(family, tmp_path):
    model = build(family)
    if family in HIDDEN_OVER_HEADS:
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(PruneError, match="a config cannot describe fewer heads at this width"):
            llm.prune_structured(model, calibration(family), heads=0.5)
        assert unchanged(model, before)
        return
    report = llm.prune_structured(model, calibration(family), heads=0.5)
    assert report.heads[0] == 2 and report.params_after < report.params_before
    assert reloads(model, family, tmp_path)
    if model.can_generate():
        assert type(model).from_pretrained(tmp_path).generate(input_ids=X, max_new_tokens=3, do_sample=False).shape[1] > 1


def test_gemma3_one_key_value_head_gets_the_nearest_count_its_config_accepts(tmp_path):
    """Gemma-3 270M's layout at heads=0.2: 3 heads asked, but Gemma3TextConfig refuses
    hidden_size % heads != 0 (64 % 3), so 2 heads stay; the report says both."""
    model = build("gemma3", num_key_value_heads=1)
    report = llm.prune_structured(model, IDS, heads=0.2)
    assert report.heads_asked == 3 and report.heads == (2, 1)
    assert all(len(cut["query_heads"]) == 2 for cut in report.removed.values())
    assert reloads(model, "gemma3", tmp_path)
    assert type(model).from_pretrained(tmp_path).config.num_attention_heads == 2


def test_the_asked_count_stays_where_the_config_accepts_it():
    model = tiny_llama()
    model.config.hidden_size, model.config.num_key_value_heads, model.config.head_dim = 48, 1, 16
    model = type(model)(model.config).eval()
    report = llm.prune_structured(model, IDS, heads=0.25)  # 48 % 3 == 0: Llama takes 3 heads
    assert report.heads_asked == 3 and report.heads == (3, 1)


def silenced(dense, report, attentions):
    """The dense model with the removed heads' output-projection columns zeroed."""
    model = copy.deepcopy(dense)
    with torch.no_grad():
        for key, att in attentions(model):
            for head in report.removed[key].get("kv_groups", report.removed[key].get("query_heads", [])):
                att.o.weight[:, head * att.head_dim:(head + 1) * att.head_dim] = 0
    return model


@pytest.mark.parametrize("family", ["t5", "phi3", "vit"])
def test_the_cut_is_the_dense_model_with_those_heads_silenced(family):
    """T5: encoder, decoder and cross attention, and the relative position bias's columns; Phi-3:
    the fused qkv rows; ViT: pixels in."""
    dense = build(family, num_key_value_heads=4) if family == "phi3" else build(family)
    model = copy.deepcopy(dense)
    report = llm.prune_structured(model, calibration(family), heads=0.5)
    config = dense.config

    def attentions(m):
        if family == "t5":
            return [(a.name, a) for a in families.find_attentions(m, config)]
        return [(i, families.find_attentions(b, config)[0]) for i, b in enumerate(find_blocks(m)[1])]
    assert torch.allclose(output(model, family), output(silenced(dense, report, attentions), family), atol=1e-5)
    if family == "t5":
        assert len(report.removed) == 6 and all(a.o.in_features == 32 for _, a in attentions(model))
        assert model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.shape == (32, 2)


def test_a_cut_the_config_does_not_describe_is_refused_and_put_back(monkeypatch):
    model = tiny_llama()
    before, config = copy.deepcopy(model.state_dict()), model.config.to_dict()
    monkeypatch.setattr(structured, "_update_config", lambda model, plan: ((2, 1), None))  # config not written
    with pytest.raises(PruneError, match="config cannot describe the pruned shapes"):
        llm.prune_structured(model, IDS, heads=0.5)
    assert unchanged(model, before) and model.config.to_dict() == config


def test_only_one_block_holds_statistics_at_a_time(monkeypatch):
    model = tiny_llama(layers=3)
    alive, original = [], structured.collect

    def counting(block, layers, run, gram):  # no gc.collect(): freed as soon as dropped, no cycle holds them
        assert not [ref for ref in alive if ref() is not None], "an earlier block's statistics are still held"
        stats = original(block, layers, run, gram)
        alive.extend(weakref.ref(s) for s in stats.values())
        return stats
    monkeypatch.setattr(structured, "collect", counting)
    llm.prune_structured(model, IDS, heads=0.5, ffn=0.25, layers=1, recover=True)
    assert len(alive) == 2 * 2  # 2 kept blocks, o_proj and down_proj each


# ALBERT's embedding width differs from its hidden width, GPT-2's c_attn is 3 x hidden, DeBERTa-v2's
# attention output is hidden x hidden: no residual cut their configs can say
GENERIC_REFUSED = {"albert", "gpt2", "deberta-v2"}


@pytest.mark.parametrize("family", ALL)
def test_the_generic_route_reloads_or_refuses_with_the_model_unchanged(family, tmp_path):
    """Residual widths in steps of the head count (Llama's config refuses 45 with 4 heads), the
    head size written explicitly, every FFN width field (d_ff, hidden_dim, fused gate_up)."""
    model = build(family)
    before = copy.deepcopy(model.state_dict())
    example = tuple(inputs(family).values()) if family != "t5" else (X, None, X)
    if family in GENERIC_REFUSED:
        with pytest.raises(PruneError, match="config cannot describe") as refused:
            pk.prune_structured(model, example, ratio=0.3)
        assert "\n" not in str(refused.value) and unchanged(model, before)
        return
    result = pk.prune_structured(model, example, ratio=0.3)
    assert result.params_after < result.params_before and reloads(model, family, tmp_path)


def test_a_bf16_model_stays_bf16_and_passes_its_reload_check(tmp_path):
    """A model cast with .to(bf16) keeps bf16 rotary tables, a reloaded one fp32: the check allows
    bf16's rounding, and nothing else."""
    model = build("llama").to(torch.bfloat16)
    report = llm.prune_structured(model, IDS, heads=0.5, ffn=0.25)
    assert report.heads == (2, 1) and all(p.dtype == torch.bfloat16 for p in model.parameters())
