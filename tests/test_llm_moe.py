"""Mixture-of-experts models in prunekit.llm: every expert of every family pruned on the tokens
its router sends to it (checked against explicit routing), experts no token reaches, N:M along
each expert's inputs, bf16, rollback, and whole-expert removal (REAP) that reloads."""
import copy
import importlib

import pytest
import torch

from llm_helpers import MOE_FAMILIES, build_moe, tiny_llama, with_linear_experts
from prunekit import PruneError, llm
from prunekit.llm.experts import prune_experts
from prunekit.llm.layers import block_layers, collect, matrix
from prunekit.llm.methods import magnitude
from prunekit.llm.rollback import Rollback

prune_module = importlib.import_module("prunekit.llm.prune")   # llm.prune is the function
BATCHES = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The eager experts loop is thousands of tiny ops: with 2 threads on a busy 2-core machine each
    pays a thread hand-off (measured: 3.6 s against 0.2 s for three prunes). Put back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def experts_of(block):
    return block.mlp.experts


def expert_matrix(block, name, e):
    """Expert e's (out, in) matrix, read straight from the 3-D parameter and its layout."""
    experts = experts_of(block)
    w = getattr(experts, name)[e].detach().float()
    return w.t() if experts.is_transposed else w


def router_of(block):
    return block.mlp.router if hasattr(block.mlp, "router") else block.mlp.gate


def moe_inputs_and_routes(model, index=0):
    """(tokens entering block `index`'s MoE module, the experts the router picks (tokens, k), their weights)."""
    seen = []
    block = model.model.layers[index]
    handle = block.mlp.register_forward_pre_hook(lambda m, args: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        for row in BATCHES:
            model(input_ids=row.unsqueeze(0))
        handle.remove()
        hidden = torch.cat(seen)
        _, weights, chosen = router_of(block)(hidden)
    return hidden, chosen, weights


def stored_sparsity(model):
    """Zeros over every block's Linear weights (routers aside) and whole 3-D expert parameters."""
    zeros = total = 0
    for block in model.model.layers:
        tensors = [p for n, p in block.named_parameters() if p.dim() == 3]
        tensors += [m.weight for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)
                    and n.rsplit(".", 1)[-1] not in ("gate", "router", "shared_expert_gate")]
        zeros += sum(int((t == 0).sum()) for t in tensors)
        total += sum(t.numel() for t in tensors)
    return zeros / total


@pytest.mark.parametrize("family", sorted(MOE_FAMILIES))
def test_every_expert_matrix_of_every_block_reaches_the_sparsity_per_row(family):
    model = build_moe(family)
    implementation = model.config._experts_implementation
    routers = [router_of(b).weight.detach().clone() for b in model.model.layers]
    report = llm.prune(model, BATCHES, method="wanda", sparsity=0.5)
    for index, block in enumerate(model.model.layers):
        for e in range(experts_of(block).gate_up_proj.shape[0]):
            for name in ("gate_up_proj", "down_proj"):
                w = expert_matrix(block, name, e)
                assert (w == 0).sum(1).eq(w.shape[1] // 2).all(), (index, name, e)
        assert torch.equal(router_of(block).weight, routers[index])   # routers stay dense
        assert f"block {index} mlp.{'router' if family == 'gpt_oss' else 'gate'}.weight" in report.left_dense
    assert report.sparsity == pytest.approx(stored_sparsity(model), abs=1e-9)
    assert report.sparsity == pytest.approx(0.5, abs=0.01)
    assert not report.magnitude_fallback and not report.not_reached
    assert model.config._experts_implementation == implementation   # eager only while calibrating


@pytest.mark.parametrize("family", sorted(MOE_FAMILIES))
def test_expert_statistics_are_those_of_the_tokens_the_router_sends(family):
    model = build_moe(family)
    block = model.model.layers[0]
    with torch.no_grad():
        stats = collect(block, block_layers(block), lambda: [model(input_ids=r.unsqueeze(0)) for r in BATCHES],
                        gram=True)
    hidden, chosen, _ = moe_inputs_and_routes(model)
    experts = experts_of(block)
    for e in range(experts.gate_up_proj.shape[0]):
        x = hidden[(chosen == e).any(-1)].float()
        gate_up = x @ expert_matrix(block, "gate_up_proj", e).t()
        if getattr(experts, "gate_up_proj_bias", None) is not None:
            gate_up = gate_up + experts.gate_up_proj_bias[e].detach()
        act = experts._apply_gate(gate_up)         # down's input: act(gate)·up of those tokens only
        first, second = stats[f"mlp.experts.{e}.gate_up_proj"], stats[f"mlp.experts.{e}.down_proj"]
        assert first.tokens == second.tokens == x.shape[0] > 0
        torch.testing.assert_close(first.norms(), x.norm(dim=0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(first.hessian(), x.t() @ x / x.shape[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(second.norms(), act.norm(dim=0), rtol=1e-4, atol=1e-5)


def test_expert_inputs_are_found_through_a_cast_of_the_weight_slice():
    """OpenAI's privacy filter multiplies by `self.gate_up_proj[e].float()`: in bf16 that cast is a
    new tensor, no longer a view of the parameter, and must still count as expert e's weight."""
    import transformers as T
    config = T.OpenAIPrivacyFilterConfig(
        vocab_size=256, hidden_size=32, intermediate_size=32, head_dim=8, num_attention_heads=4,
        num_key_value_heads=2, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, sliding_window=8,
        max_position_embeddings=128, pad_token_id=0, eos_token_id=0, bos_token_id=0)
    torch.manual_seed(0)
    dense = T.OpenAIPrivacyFilterModel(config).eval()
    found = []
    for model in (dense, copy.deepcopy(dense).to(torch.bfloat16)):
        block = model.layers[0]
        with torch.no_grad():
            found.append(collect(block, block_layers(block), lambda: [model(input_ids=r[None]) for r in BATCHES],
                                 gram=False))
    assert sorted(found[1]) == sorted(found[0]) and len([n for n in found[1] if "experts" in n]) == 8
    for name, stats in found[0].items():   # bf16 rounding (and a borderline token's route) aside, the same
        assert float((found[1][name].norms() - stats.norms()).norm() / stats.norms().norm()) < 0.05, name


def _starve_expert_3(model):
    """DeepSeek-V3's score correction only biases the choice: -1e4 and expert 3 is never picked."""
    for block in model.model.layers:
        block.mlp.gate.e_score_correction_bias[3] = -1e4
    return model


@pytest.mark.parametrize("linear", [False, True], ids=["3d", "linear"])
def test_an_expert_no_token_reaches_is_pruned_by_magnitude_and_named(linear):
    model = _starve_expert_3(build_moe("deepseek_v3"))
    if linear:
        model = with_linear_experts(model)
    before = {n: matrix(layer) for n, layer in block_layers(model.model.layers[0]).items()}
    report = llm.prune(model, BATCHES, method="wanda", sparsity=0.5)
    assert report.magnitude_fallback == ["block 0 mlp.experts.3", "block 1 mlp.experts.3"]
    assert not report.not_reached
    after = block_layers(model.model.layers[0])
    starved = [n for n in after if n.startswith("mlp.experts.3.")]
    assert len(starved) == (3 if linear else 2)
    for name in starved:   # magnitude over the whole matrix, not Wanda's per-row choice
        assert torch.equal(matrix(after[name]) != 0, magnitude(before[name], None, 0.5) != 0), name
    for name in [n for n in after if n.startswith("mlp.experts.") and n not in starved]:
        w = matrix(after[name])     # the experts the router does use: Wanda, half of every row
        assert (w == 0).sum(1).eq(w.shape[1] // 2).all(), name
    assert report.sparsity == pytest.approx(stored_sparsity(model), abs=1e-9)


@pytest.mark.parametrize("family", ["mixtral", "gpt_oss"])
def test_two_four_runs_along_each_expert_matrix_input_dimension(family):
    model = build_moe(family)
    llm.prune(model, BATCHES, method="sparsegpt", pattern="2:4")
    for block in model.model.layers:
        for e in range(4):
            for name in ("gate_up_proj", "down_proj"):
                w = expert_matrix(block, name, e)
                groups = (w != 0).reshape(w.shape[0], -1, 4).sum(-1)
                assert groups.le(2).all() and groups.sum() >= 0.49 * w.numel(), (name, e)


def test_a_pattern_that_does_not_divide_an_expert_input_is_refused_before_any_change():
    model = build_moe("qwen3_moe", moe_intermediate_size=30)    # down_proj reads 30 inputs
    original = copy.deepcopy(model.state_dict())
    with pytest.raises(PruneError, match=r"block 0 mlp\.experts\.0\.down_proj: 30 inputs"):
        llm.prune(model, BATCHES, method="wanda", pattern="2:4")
    for name, value in model.state_dict().items():
        assert torch.equal(value, original[name]), name


def test_owl_spreads_the_sparsity_over_blocks_expert_weights_included():
    model = build_moe("qwen3_moe")
    report = llm.prune(model, BATCHES, method="wanda", sparsity=0.5, allocation="owl", owl_lambda=0.05)
    assert len(report.outlier_ratios) == 2
    for index, block in enumerate(model.model.layers):
        target = report.blocks[index]["target"]
        w = expert_matrix(block, "down_proj", 1)
        assert (w == 0).sum(1).eq(round(w.shape[1] * target)).all()


def test_bf16_moe_stays_bf16_with_fp32_statistics():
    model = build_moe("mixtral", dtype=torch.bfloat16)
    block = model.model.layers[0]
    with torch.no_grad():
        stats = collect(block, block_layers(block), lambda: model(input_ids=BATCHES[:1]), gram=True)
    assert stats["mlp.experts.0.gate_up_proj"].gram.dtype == torch.float32
    report = llm.prune(model, BATCHES, method="sparsegpt", sparsity=0.5)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    for e in range(4):
        assert float((experts_of(block).down_proj[e] == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
    assert report.sparsity == pytest.approx(stored_sparsity(model), abs=1e-9)


def test_a_failure_half_way_leaves_the_model_as_it_was(monkeypatch):
    model = build_moe("mixtral")
    original = copy.deepcopy(model.state_dict())
    calls, kept = [], []
    real_set, real_keep = prune_module.set_matrix, Rollback.keep

    def failing_set(layer, value):
        calls.append(layer)
        if len(calls) == 17:     # block 1, after its attention and some experts changed
            raise RuntimeError("disk full")
        real_set(layer, value)

    monkeypatch.setattr(prune_module, "set_matrix", failing_set)
    monkeypatch.setattr(Rollback, "keep", lambda self, t: (kept.append(id(t)), real_keep(self, t)))
    with pytest.raises(RuntimeError, match="disk full"):
        llm.prune(model, BATCHES, method="wanda", sparsity=0.5)
    assert len(kept) == len(set(kept))          # a 3-D parameter is kept once, not once per expert
    for name, value in model.state_dict().items():
        assert torch.equal(value, original[name]), name


@pytest.mark.parametrize("family", sorted(MOE_FAMILIES))
def test_removing_experts_shrinks_router_weights_and_config_and_reloads(family, tmp_path):
    model = build_moe(family)
    dense = copy.deepcopy(model)
    report = prune_experts(model, BATCHES, experts=0.25)
    drop = report.removed[0]
    assert len(drop) == 1 and report.experts == 3
    assert drop == [int(torch.tensor(report.scores[0]).argmin())]
    keep = [e for e in range(4) if e not in drop]
    block, before = model.model.layers[0], dense.model.layers[0]
    assert torch.equal(experts_of(block).down_proj, experts_of(before).down_proj[keep])
    assert torch.equal(router_of(block).weight, router_of(before).weight[keep])
    x = BATCHES[:1, :12]
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    counts = [getattr(reloaded.config, f, None) for f in ("num_local_experts", "num_experts", "n_routed_experts")]
    assert 3 in counts and 4 not in counts
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=x).logits, model(input_ids=x).logits)


def test_reap_score_is_the_mean_router_weight_times_expert_output_norm():
    model = build_moe("mixtral")
    hidden, chosen, weights = moe_inputs_and_routes(model)
    report = prune_experts(copy.deepcopy(model), BATCHES, experts=1)
    block = model.model.layers[0]
    for e in range(4):
        token, slot = torch.where(chosen == e)
        gate, up = (hidden[token] @ expert_matrix(block, "gate_up_proj", e).t()).chunk(2, dim=-1)
        out = (torch.nn.functional.silu(gate) * up) @ expert_matrix(block, "down_proj", e).t()
        expected = float((weights[token, slot] * out.norm(dim=-1)).mean())
        assert report.scores[0][e] == pytest.approx(expected, rel=1e-4)


def test_expert_removal_refuses_what_the_router_or_config_cannot_describe():
    model = build_moe("qwen3_moe")
    original = copy.deepcopy(model.state_dict())
    with pytest.raises(PruneError, match="num_experts_per_tok"):
        prune_experts(model, BATCHES, experts=3)   # 1 expert left, top-2 routing
    with pytest.raises(PruneError, match="fraction"):
        prune_experts(model, BATCHES, experts=1.5)
    for name, value in model.state_dict().items():
        assert torch.equal(value, original[name]), name
    assert model.config.num_experts == 4
    with pytest.raises(PruneError, match="mixture-of-experts"):
        prune_experts(tiny_llama(), BATCHES, experts=1)


def test_grouped_routing_loses_the_same_number_of_experts_in_every_group(tmp_path):
    model = build_moe("deepseek_v3", dtype=torch.bfloat16, n_routed_experts=8, n_group=2, topk_group=2)
    with pytest.raises(PruneError, match="n_group=2"):
        prune_experts(model, BATCHES, experts=1)     # 1 is not a multiple of the 2 groups
    report = prune_experts(model, BATCHES, experts=2)
    for drop in report.removed.values():
        assert [e // 4 for e in drop] == [0, 1]      # one from each group of 4
    assert model.config.n_routed_experts == 6 and model.model.layers[0].mlp.experts.down_proj.dtype == torch.bfloat16
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    with torch.no_grad():   # bf16 tolerance: from_pretrained keeps buffers (rotary tables) in fp32, even dense
        torch.testing.assert_close(reloaded(input_ids=BATCHES[:1]).logits, model(input_ids=BATCHES[:1]).logits,
                                   rtol=2e-2, atol=1e-2)


def test_prune_structured_removes_experts_and_a_later_failure_puts_them_back(monkeypatch):
    model = build_moe("olmoe")
    report = llm.prune_structured(model, BATCHES, experts=1)
    assert {block: len(drop) for block, drop in report.removed["experts"].items()} == {0: 1, 1: 1}
    assert model.config.num_experts == 3 and model.model.layers[1].mlp.experts.gate_up_proj.shape[0] == 3
    model = build_moe("olmoe")
    original = copy.deepcopy(model.state_dict())

    def refuse(*args, **kwargs):
        raise PruneError("reload differs")

    monkeypatch.setattr(importlib.import_module("prunekit.llm.structured"), "check_reload", refuse)
    with pytest.raises(PruneError, match="reload differs"):
        llm.prune_structured(model, BATCHES, experts=1)
    assert model.config.num_experts == 4 and model.model.layers[0].mlp.experts.num_experts == 4
    for name, value in model.state_dict().items():
        assert torch.equal(value, original[name]), name


def test_every_matrix_shape_is_out_by_in_without_a_copy():
    """matrix_shape reads (out, in) as matrix() does: Conv1D and gpt-oss's transposed experts
    store (in, out); the N:M check and the ranks' buffers rely on it."""
    from llm_helpers import build
    from prunekit.llm.blocks import find_blocks
    from prunekit.llm.layers import matrix_shape
    for model in (build_moe("gpt_oss"), build("gpt2"), build("llama")):
        _, blocks = find_blocks(model)
        for name, layer in block_layers(blocks[0]).items():
            assert matrix_shape(layer) == tuple(matrix(layer).shape), name
