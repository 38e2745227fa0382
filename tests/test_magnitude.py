import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from helpers import make_mlp
from prunekit.unstructured import select


def mlp(seed=0, sizes=(20, 30, 10)):
    return make_mlp(*sizes, seed=seed)


def weights(model):
    return [m.weight.detach().reshape(-1) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def zeros(model):
    return sum(int((w == 0).sum()) for w in weights(model))


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def brute_force_keep(values, k):
    """Reference: stable sort, prune the first k (ties in index order)."""
    order = torch.sort(values, stable=True).indices
    keep = torch.ones_like(values, dtype=torch.bool)
    keep[order[:k]] = False
    return keep


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.77, 0.9, 0.999, 1.0])
def test_global_prunes_exact_count(sparsity):
    model = mlp()
    total = sum(w.numel() for w in weights(model))
    report = pk.prune_magnitude(model, sparsity)
    assert zeros(model) == round(sparsity * total) == report.pruned


@pytest.mark.parametrize("sparsity", [0.3, 0.9])
def test_layer_scope_prunes_each_tensor_exactly(sparsity):
    model = mlp()
    pk.prune_magnitude(model, sparsity, scope="layer")
    for w in weights(model):
        assert int((w == 0).sum()) == round(sparsity * w.numel())


def test_global_matches_brute_force_with_ties_across_chunks(monkeypatch):
    monkeypatch.setattr(select, "CHUNK", 7)  # many chunks, ties straddling boundaries
    model = mlp(sizes=(13, 11, 9))
    with torch.no_grad():  # few distinct magnitudes -> heavy ties
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randint(-3, 4, m.weight.shape).float())
    flat = torch.cat(weights(model)).clone()
    k = round(0.6 * flat.numel())
    pk.prune_magnitude(model, 0.6)
    expected = brute_force_keep(flat.abs(), k)
    got = torch.cat([w != 0 for w in weights(model)])
    # original zeros are pruned first anyway; compare the keep sets where weights were non-zero
    assert torch.equal(got, expected & (flat != 0))
    assert int((~got).sum()) == k


def test_all_equal_weights_tie_break_is_first_in_order():
    model = nn.Linear(10, 10, bias=False)
    nn.init.constant_(model.weight, 0.5)
    pk.prune_magnitude(model, 0.25)
    keep = model.weight.detach().reshape(-1) != 0
    assert keep[:25].sum() == 0 and keep[25:].all()


def test_pruning_again_counts_existing_zeros():
    model = mlp()
    total = sum(w.numel() for w in weights(model))
    pk.prune_magnitude(model, 0.5)
    first = [w == 0 for w in weights(model)]
    pk.prune_magnitude(model, 0.8)
    assert zeros(model) == round(0.8 * total)
    for old, w in zip(first, weights(model)):
        assert (w[old] == 0).all()  # what was pruned stays pruned


def test_threshold_prunes_below():
    model = mlp()
    before = torch.cat(weights(model)).clone()
    report = pk.prune_magnitude(model, threshold=0.05)
    assert report.pruned == int((before.abs() < 0.05).sum())
    after = torch.cat(weights(model))
    assert torch.equal(after != 0, before.abs() >= 0.05)


def test_l2_and_l1_rank_alike_random_is_seeded():
    a, b = mlp(), mlp()
    pk.prune_magnitude(a, 0.5, criterion="l1")
    pk.prune_magnitude(b, 0.5, criterion="l2")
    assert all(torch.equal(x == 0, y == 0) for x, y in zip(weights(a), weights(b)))
    r1, r2, r3 = mlp(), mlp(), mlp()
    for model, seed in ((r1, 1), (r2, 1), (r3, 2)):
        pk.prune_magnitude(model, 0.5, criterion="random", seed=seed)
    assert all(torch.equal(x == 0, y == 0) for x, y in zip(weights(r1), weights(r2)))
    assert not all(torch.equal(x == 0, y == 0) for x, y in zip(weights(r1), weights(r3)))
    assert zeros(r1) == round(0.5 * sum(w.numel() for w in weights(r1)))


def test_user_callable_criterion():
    model = nn.Linear(4, 4, bias=False)
    pk.prune_magnitude(model, 0.5, criterion=lambda w: -w.abs())  # prune the LARGEST
    assert (model.weight == 0).sum() == 8


def test_include_exclude():
    model = mlp()
    pk.prune_magnitude(model, 0.9, include=r"^0$")
    assert (model[0].weight == 0).float().mean() == pytest.approx(0.9, abs=1e-3)
    assert (model[2].weight == 0).sum() == 0
    model = mlp()
    pk.prune_magnitude(model, 0.9, exclude=["^0$"])
    assert (model[0].weight == 0).sum() == 0


def test_more_than_16m_weights():
    model = nn.Linear(4100, 4100, bias=False)  # 16.8M > torch.quantile's limit
    pk.prune_magnitude(model, 0.5)
    assert int((model.weight == 0).sum()) == round(0.5 * 4100 * 4100)


def test_zeros_survive_finetuning_with_momentum_and_weight_decay():
    model = mlp()
    pk.prune_magnitude(model, 0.8)
    pruned = [w == 0 for w in weights(model)]
    for opt in (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3),
                torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)):
        for _ in range(20):
            x = torch.randn(16, 20)
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for mask, w in zip(pruned, weights(model)):
        assert (w[mask] == 0).all()
        assert (w[~mask] != 0).any()


def test_deepcopy_state_dict_and_make_permanent_keep_outputs():
    model = mlp()
    pk.prune_magnitude(model, 0.7)
    x = torch.randn(5, 20)
    expected = model(x)
    assert torch.equal(copy.deepcopy(model)(x), expected)
    fresh = mlp(seed=1)
    pk.prune_magnitude(fresh, 0.1)  # same parametrized structure, different values
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), expected)
    pk.make_permanent(model)
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    assert torch.equal(model(x), expected)
    assert set(model.state_dict()) == set(mlp().state_dict())


def test_sparsity_report():
    model = mlp()
    pk.prune_magnitude(model, 0.5, scope="layer")
    s = pk.sparsity(model)
    assert s["global"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert set(s["layers"]) == {"0", "2"}


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsity": -0.1}, "sparsity"), ({"sparsity": 1.5}, "sparsity"),
    ({"sparsity": float("nan")}, "sparsity"), ({"sparsity": "0.5"}, "sparsity"),
    ({"sparsity": 0.5, "criterion": "magic"}, "criterion"),
    ({"sparsity": 0.5, "include": "nomatch"}, "matches no"),
    ({"sparsity": 0.5, "exclude": "("}, "regex"),
    ({"sparsity": 0.5, "scope": "world"}, "scope"),
    ({"sparsity": 0.5, "threshold": 0.1}, "exactly one"),
    ({}, "exactly one"),
    ({"threshold": float("inf")}, "threshold"),
])
def test_bad_input_is_refused_and_model_unchanged(kwargs, message):
    model = mlp()
    pk.prune_magnitude(model, 0.3)  # an existing mask must survive a refused call
    before = snapshot(model)
    with pytest.raises(pk.PruneError, match=message):
        pk.prune_magnitude(model, **kwargs)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nothing_prunable():
    with pytest.raises(pk.PruneError, match="nothing to prune"):
        pk.prune_magnitude(nn.Sequential(nn.ReLU()), 0.5)


def test_nan_weights_are_refused_with_the_layer_named():
    model = mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(pk.PruneError, match="weights of 2 contain NaN"):
        pk.prune_magnitude(model, 0.5)
    assert not pk.masks.masked_modules(model)
    assert all(torch.equal(before[k], v) or torch.isnan(v).any() for k, v in model.state_dict().items())


def test_report_counts_weights_already_zero():
    model = mlp()
    pk.prune_magnitude(model, 0.8)
    pk.make_permanent(model)  # the zeros stay, the masks go
    report = pk.prune_magnitude(model, 0.5, criterion="random", seed=0)
    total = sum(w.numel() for w in weights(model))
    assert report.pruned == zeros(model) and report.sparsity == pytest.approx(zeros(model) / total)
    assert report.sparsity > 0.8


def test_criterion_with_the_wrong_shape_is_refused_and_model_unchanged():
    model = mlp()
    before = snapshot(model)
    for bad in (lambda w: w.abs().sum(), lambda w: w.abs().reshape(-1)[:3]):
        with pytest.raises(pk.PruneError, match="one score per weight"):
            pk.prune_magnitude(model, 0.5, criterion=bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_an_empty_layer_does_not_divide_by_zero():
    model = nn.Sequential(nn.Linear(4, 0), nn.Linear(0, 3))
    report = pk.prune_magnitude(model, 0.5)
    assert report.total == 0 and report.sparsity == 0.0


def test_a_weight_shared_by_two_layers_is_ranked_once_and_masked_alike():
    a, b = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
    b.weight = a.weight
    model = nn.Sequential(a, nn.ReLU(), b)
    report = pk.prune_magnitude(model, 33 / 64)  # an odd count: two rankings would split it
    assert report.total == 64 and report.pruned == 33
    assert pk.masks.get_mask(a) is pk.masks.get_mask(b)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    assert torch.equal(a.weight, b.weight) and int((a.weight == 0).sum()) == 33


@pytest.mark.parametrize("fmt", ["dense", "compressed"])
def test_a_shared_weight_saves_loads_and_is_reported_for_every_layer(tmp_path, fmt):
    a, b = nn.Linear(16, 16, bias=False), nn.Linear(16, 16, bias=False)
    b.weight = a.weight
    model = nn.Sequential(a, nn.ReLU(), b)
    report = pk.prune_magnitude(model, 0.5)
    assert set(report.layers) == {"0", "2"} and report.layers["0"] == report.layers["2"]
    with torch.no_grad():  # a live weight at exactly 0, so the mask must be stored too
        keep = pk.masks.get_mask(a)
        pk.masks.raw_tensor(a)[keep.nonzero()[0][0], keep.nonzero()[0][1]] = 0
    fresh = nn.Sequential(nn.Linear(16, 16, bias=False), nn.ReLU(), nn.Linear(16, 16, bias=False))
    loaded = pk.load(pk.save(model, tmp_path / "m.safetensors", format=fmt), model=fresh)
    x = torch.randn(3, 16)
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(pk.masks.get_mask(loaded[2]), pk.masks.get_mask(b))
