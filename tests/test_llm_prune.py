"""prunekit.llm.prune: each method's defining property, the block-sequential path, N:M and
OWL, SparseGPT on singular Hessians, and a failure that leaves the model as it was."""
import copy

import pytest
import torch

from llm_helpers import FAMILIES, build, layer_inputs, tiny_llama
from prunekit import PruneError, llm
from prunekit.llm import sparsegpt as sparsegpt_module
from prunekit.llm.layers import block_layers, matrix

BATCHES = torch.randint(0, 256, (6, 48), generator=torch.Generator().manual_seed(1))


def pruned(method, model=None, **kwargs):
    model = copy.deepcopy(model or tiny_llama())
    report = llm.prune(model, BATCHES, method=method, **kwargs)
    return model, report


def wanda_keeps_top_scores(weight, pruned_weight, inputs):
    """In every row, every kept weight scores at least as high as every pruned one."""
    scores = weight.abs() * inputs.pow(2).sum(0).sqrt().unsqueeze(0)
    kept = pruned_weight != 0
    lowest_kept = scores.masked_fill(~kept, float("inf")).min(1).values
    highest_pruned = scores.masked_fill(kept, float("-inf")).max(1).values
    return bool((lowest_kept >= highest_pruned).all())


def test_wanda_keeps_the_highest_weight_times_input_norm_in_each_row():
    dense = tiny_llama()
    model, _report = pruned("wanda", dense, sparsity=0.5)
    for name, layer in block_layers(dense.model.layers[0]).items():
        after = matrix(block_layers(model.model.layers[0])[name])
        assert (after == 0).sum(1).eq(round(after.shape[1] * 0.5)).all(), name
        assert wanda_keeps_top_scores(matrix(layer), after, layer_inputs(dense, layer, BATCHES)), name


def test_block_two_is_pruned_on_the_outputs_of_pruned_block_one():
    """Block 1's masks follow the activations of the model whose block 0 is already pruned and
    whose block 1 is still dense (what the sequential path sees), not the dense model's."""
    dense = tiny_llama()
    model, _ = pruned("wanda", dense, sparsity=0.5)
    seen = copy.deepcopy(model)
    seen.model.layers[1].load_state_dict(dense.model.layers[1].state_dict())
    differs = False
    for name, layer in block_layers(dense.model.layers[1]).items():
        after = matrix(block_layers(model.model.layers[1])[name])
        sequential = layer_inputs(seen, block_layers(seen.model.layers[1])[name], BATCHES)
        assert wanda_keeps_top_scores(matrix(layer), after, sequential), name
        differs |= not wanda_keeps_top_scores(matrix(layer), after, layer_inputs(dense, layer, BATCHES))
    assert differs, "block 1's masks are those of the dense model's activations"


def reconstruction_error(dense, model, name):
    layer = block_layers(dense.model.layers[0])[name]
    x = layer_inputs(dense, layer, BATCHES)
    after = matrix(block_layers(model.model.layers[0])[name])
    return float((x @ (matrix(layer) - after).t()).pow(2).sum())


@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_sparsegpt_reconstructs_each_layer_better_than_magnitude_and_wanda(pattern):
    dense = tiny_llama()
    models = {m: pruned(m, dense, sparsity=0.5, pattern=pattern)[0] for m in ("magnitude", "wanda", "sparsegpt")}
    for name in block_layers(dense.model.layers[0]):
        errors = {m: reconstruction_error(dense, model, name) for m, model in models.items()}
        assert errors["sparsegpt"] < errors["wanda"] and errors["sparsegpt"] < errors["magnitude"], (name, errors)


def nm_groups(model, m):
    """(out, in/m, m) groups of every pruned matrix, GPT-2's (in, out) Conv1D turned round."""
    for block in model.transformer.h if hasattr(model, "transformer") else model.model.layers:
        for layer in block_layers(block).values():
            weight = matrix(layer)
            yield weight.reshape(weight.shape[0], -1, m)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_n_m_is_exact_in_every_group(family, method, pattern):
    n, m = map(int, pattern.split(":"))
    model, report = pruned(method, build(family), pattern=pattern)
    assert report.sparsity == pytest.approx((m - n) / m)
    for groups in nm_groups(model, m):
        assert groups.ne(0).sum(-1).eq(n).all()


def test_owl_gives_blocks_with_more_outliers_less_sparsity_2_lambda_apart_mean_kept():
    dense = tiny_llama(layers=4)
    _model, report = pruned("wanda", dense, sparsity=0.7, allocation="owl", owl_lambda=0.08)
    targets = [b["target"] for b in report.blocks]
    assert sum(targets) / len(targets) == pytest.approx(0.7)
    assert max(targets) - min(targets) == pytest.approx(0.16)
    by_outliers = sorted(range(4), key=lambda i: report.outlier_ratios[i])
    assert [targets[i] for i in by_outliers] == sorted(targets, reverse=True)
    assert report.sparsity == pytest.approx(0.7, abs=0.01)


def test_sparsegpt_on_a_singular_hessian_gives_finite_weights_at_the_target():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 32, generator=generator)  # 8 tokens, 32 inputs: rank 8
    x[:, 5] = 0                                   # a dead input
    x[:, 7] = x[:, 6]                             # two identical inputs
    weight = torch.randn(16, 32, generator=generator)
    for pattern in (None, (2, 4)):
        result = sparsegpt_module.sparsegpt(weight, x.t() @ x / 8, 0.5, pattern)
        assert torch.isfinite(result).all()
        assert (result == 0).float().mean() >= 0.5


def test_sparsegpt_raises_the_damping_when_cholesky_fails(caplog):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=generator)
    indefinite = x.t() @ x / 64 - 0.5 * torch.eye(16)  # no Cholesky at 1 % or 10 % damping
    with caplog.at_level("INFO", logger="prunekit.llm.sparsegpt"):
        result = sparsegpt_module.sparsegpt(torch.randn(8, 16, generator=generator), indefinite, 0.5)
    assert torch.isfinite(result).all() and "damping raised" in caplog.text


def test_sparsegpt_never_returns_nan_it_fails_in_one_line():
    hessian = torch.eye(16)
    hessian[3, 4] = hessian[4, 3] = float("nan")
    with pytest.raises(PruneError, match="singular"):
        sparsegpt_module.sparsegpt(torch.randn(8, 16), hessian, 0.5)


def test_a_failing_call_leaves_the_model_as_it_was(monkeypatch):
    model = tiny_llama()
    before = copy.deepcopy(model.state_dict())
    calls = []

    def fail_on_the_second_block(weight, hessian, sparsity, pattern=None):
        calls.append(1)
        if len(calls) > len(block_layers(model.model.layers[0])):
            raise PruneError("boom")
        return weight * 0

    monkeypatch.setattr("prunekit.llm.methods.sparsegpt", fail_on_the_second_block)
    with pytest.raises(PruneError, match="boom"):
        llm.prune(model, BATCHES, method="sparsegpt")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "obs"}, "unknown llm pruning method 'obs'"),
    ({"pattern": "2-4"}, "pattern must look like"),
    ({"pattern": "4:2"}, "need 1 <= N < M"),
    ({"pattern": "2:3"}, "not a multiple of M=3"),
    ({"pattern": "2:4", "allocation": "owl"}, "N:M pattern fixes"),
    ({"allocation": "best"}, "allocation must be one of"),
    ({"sparsity": 1.0}, r"sparsity must be a number in \[0, 1\)"),
])
def test_bad_arguments_are_one_line_and_change_nothing(kwargs, message):
    model = tiny_llama()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(PruneError, match=message):
        llm.prune(model, BATCHES, **kwargs)
    with pytest.raises(PruneError, match="LongTensor"):
        llm.prune(model, BATCHES.float())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_prunes_and_reloads_with_from_pretrained(family, tmp_path):
    model = build(family)
    report = llm.prune(model, BATCHES % 200 + 3, method="wanda", sparsity=0.5)
    assert report.sparsity == pytest.approx(0.5, abs=0.01) and not report.not_reached
    assert len(report.blocks) == 2
    model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    x = torch.randint(3, 200, (1, 16))
    with torch.no_grad():
        a, b = model(input_ids=x), again(input_ids=x)
    first = a.logits if hasattr(a, "logits") else a.last_hidden_state
    assert torch.isfinite(first).all()
    assert torch.equal(first, b.logits if hasattr(b, "logits") else b.last_hidden_state)


@pytest.mark.parametrize("n, m", [(2, 6), (1, 3), (2, 4)])
def test_sparsegpt_n_m_groups_stay_whole_when_m_does_not_divide_the_column_block(n, m):
    """Column blocks are a multiple of M long, so a group never straddles two of them."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 384, generator=generator)
    result = sparsegpt_module.sparsegpt(torch.randn(16, 384, generator=generator), x.t() @ x / 512, 0.0, (n, m))
    assert result.reshape(16, -1, m).ne(0).sum(-1).eq(n).all()


def test_owl_refuses_a_spread_that_would_push_a_block_outside_0_1():
    with pytest.raises(PruneError, match="lower owl_lambda"):
        llm.prune(tiny_llama(layers=4), BATCHES, method="wanda", sparsity=0.95, allocation="owl", owl_lambda=0.2)


@pytest.mark.parametrize("levels", [None, 4])
def test_the_per_row_selection_drops_what_a_stable_sort_drops(levels):
    """kthvalue replaces argsort: the same k lowest per row, ties dropped in index order."""
    from prunekit.llm.methods import _drop_lowest_per_row
    scores = torch.rand(37, 64, generator=torch.Generator().manual_seed(0))
    if levels:
        scores = (scores * levels).floor()  # many ties at the threshold
    for k in (1, 20, 32, 63):
        by_sort = torch.ones_like(scores, dtype=torch.bool)
        by_sort.scatter_(1, torch.argsort(scores, dim=1, stable=True)[:, :k], False)
        assert torch.equal(_drop_lowest_per_row(scores, k), by_sort)


def test_sparsegpt_only_reads_its_hessian_and_the_statistics_let_theirs_go():
    """SparseGPT's memory at 8B is a few (in × in) matrices: it must not copy H needlessly nor
    change the caller's, and the statistics hand theirs over instead of keeping a second one."""
    from prunekit.llm.layers import InputStats
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    x[:, 3] = 0  # a dead input: the one case that needs a modified copy
    stats = InputStats(16, gram=True)
    stats.add(x)
    expected = stats.hessian()
    hessian = stats.release_hessian()
    assert stats.gram is None and torch.equal(hessian, expected)
    before = hessian.clone()
    sparsegpt_module.sparsegpt(torch.randn(8, 16), hessian, 0.5)
    assert torch.equal(hessian, before)
