"""The review's findings on training, lottery, random masks, seeding and tied weights (issue 14)."""
import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit import masks
from prunekit.data import Dataset, Split
from prunekit.experiments import compare, methods
from prunekit.experiments.methods.context import Context
from prunekit.targets import effective_state, stored_weight
from prunekit.train.loop import FitConfig, fit
from prunekit.training import dynamic, lottery
from prunekit.unstructured import select


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Dropout(0.3), nn.Linear(24, 4))


def _batch(seed=1, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, generator=g), torch.randint(0, 4, (n,), generator=g)


def _dataset(n=96):
    g = torch.Generator().manual_seed(7)
    split = lambda k: Split(torch.randn(k, 16, generator=g), torch.randint(0, 4, (k,), generator=g))  # noqa: E731
    return Dataset("tiny", split(n), split(32), split(32), 4, (16,))


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# 1. RigL's growth gradients: the network being trained, masks closed

def test_rigl_growth_scores_are_the_gradient_of_the_effective_weight():
    model = _mlp()
    model.eval()  # no dropout, so the expected gradient below sees the same function
    pk.prune_magnitude(model, 0.7, scope="layer")
    updater = dynamic.DynamicSparsity(model, mode="set", fraction=0.3, every=2, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for t in range(6):  # SET drops weights whose momentum keeps moving their raw values
        x, y = _batch(t)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        updater.step(x, y)
    layers = updater.layers
    assert any((masks.raw_tensor(m)[~masks.get_mask(m)] != 0).any() for _, m in layers)  # drifted
    x, y = _batch(99)
    baked = _mlp()  # the network as it computes: masks closed
    baked.load_state_dict(effective_state(model))
    baked.eval()
    weights = [dict(baked.named_modules())[name].weight for name, _ in layers]
    expected = torch.autograd.grad(nn.functional.cross_entropy(baked(x), y), weights)
    grads_before = [p.grad.clone() for p in model.parameters()]
    got = dynamic._dense_gradients(model, layers, nn.functional.cross_entropy, x, y)
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, atol=1e-6)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads_before))  # left alone


# 2. Lottery: the initial weights are a snapshot, not a replayed seed

def test_lottery_rewinds_to_the_weights_the_model_had_at_initialisation():
    model = _mlp()
    initial = lottery.snapshot(model)
    torch.rand(1000)  # the global RNG moves on between initialisation and the ticket search
    starts = []

    def train(net, on_step):
        starts.append((lottery.snapshot(net), {n: masks.get_mask(m).clone() for n, m, _ in masks.masked_modules(net)}))
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)  # "training"
        return 0.0

    lottery.find_ticket(model, train, rounds=2, rate=0.5)
    assert len(starts) == 3
    for start, mask_of in starts[1:]:
        for name, value in initial.items():
            mask = mask_of.get(name.rpartition(".")[0]) if name.endswith("weight") else None
            assert torch.equal(start[name], value if mask is None else value * mask)


def test_compare_keeps_the_dense_models_initial_snapshot(tmp_path, monkeypatch):
    """A model whose initialisation a torch seed does not reproduce (numpy's RNG, say): the
    lottery methods still get the weights the dense model really started from."""
    import numpy as np
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path))
    started = []

    def build(name, **kwargs):
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
        with torch.no_grad():
            model[1].weight.copy_(torch.from_numpy(np.random.randn(4, 16)))
        return model

    def fake_fit(model, dataset, config, **kwargs):
        started.append(lottery.snapshot(model))
        with torch.no_grad():
            model[1].weight.add_(1.0)
    monkeypatch.setattr(compare.zoo, "build", build)
    monkeypatch.setattr(compare, "fit", fake_fit)
    monkeypatch.setattr(compare, "save", lambda model, path: None)
    config = compare.CompareConfig(model="lenet300", epochs=1, out=tmp_path)
    dataset = _dataset()
    dense, initial = compare.dense_model(config, dataset, quiet=True)
    context = compare.method_context(config, dataset, initial)
    assert _states_equal(context.initial, started[0])


def test_compare_caches_the_initial_snapshot_with_the_dense_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path))
    started = []

    def fake_fit(model, dataset, config, **kwargs):
        started.append(lottery.snapshot(model))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    monkeypatch.setattr(compare, "fit", fake_fit)
    config = compare.CompareConfig(model="lenet300", epochs=1, out=tmp_path)
    first, initial = compare.dense_model(config, _dataset(), quiet=True)
    torch.rand(100)  # whatever the global RNG does in between
    again, cached = compare.dense_model(config, _dataset(), quiet=True)
    assert len(started) == 1  # the second came from the cache
    assert _states_equal(initial, started[0]) and _states_equal(cached, started[0])
    assert _states_equal(first.state_dict(), again.state_dict())


# 3. Random masks depend only on the seed and the layer

def _random_masks(model, **kwargs):
    pk.prune_magnitude(model, 0.5, criterion="random", seed=5, **kwargs)
    return {n: masks.get_mask(m).clone() for n, m, _ in masks.masked_modules(model)}


def test_random_masks_do_not_depend_on_the_chunk_size(monkeypatch):
    reference = _random_masks(_mlp(), scope="layer")
    monkeypatch.setattr(select, "CHUNK", 37)
    assert _states_equal(_random_masks(_mlp(), scope="layer"), reference)
    assert _states_equal(_random_masks(_mlp()), _random_masks(_mlp()))  # global scope too


def test_random_mask_of_a_layer_does_not_depend_on_the_other_layers():
    both = _random_masks(_mlp(), scope="layer")
    alone = _random_masks(_mlp(), scope="layer", exclude="^1$")
    assert set(alone) == {"4"} and torch.equal(alone["4"], both["4"])
    assert _states_equal(_random_masks(_mlp(), scope="layer"), both)  # same seed, same masks
    other = _mlp()
    pk.prune_magnitude(other, 0.5, criterion="random", seed=6, scope="layer")
    assert not torch.equal(masks.get_mask(other[4]), both["4"])


def test_random_nm_mask_of_a_layer_does_not_depend_on_the_other_layers():
    def nm_masks(**kwargs):
        model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))
        pk.prune_nm(model, 2, 4, criterion="random", **kwargs)
        return {n: masks.get_mask(m).clone() for n, m, _ in masks.masked_modules(model)}
    both, alone = nm_masks(), nm_masks(exclude="^0$")
    assert torch.equal(alone["1"], both["1"])
    assert not torch.equal(both["0"], both["1"])  # same shape, own scores


# 4. The library leaves its caller's global random state alone

def _tiny_context():
    dataset = _dataset()
    return Context(dataset, FitConfig(epochs=1, batch_size=32, seed=3), FitConfig(epochs=1, batch_size=32, seed=3),
                   lottery.snapshot(_mlp()))


def _rng_untouched(call):
    """Run `call` with the global RNG at a known state; return its result and whether the
    state after it is the state before."""
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    result = call()
    return result, torch.equal(before, torch.random.get_rng_state())


def test_fit_leaves_the_global_rng_alone_and_is_deterministic():
    dataset = _dataset()
    runs = []
    for _ in range(2):
        model = _mlp()
        _, untouched = _rng_untouched(lambda: fit(model, dataset, FitConfig(epochs=2, batch_size=32, seed=3),
                                                  quiet=True, keep_best=False))
        assert untouched
        runs.append(model.state_dict())
    assert _states_equal(*runs)  # dropout included: same seed, same weights
    other = _mlp()
    fit(other, dataset, FitConfig(epochs=2, batch_size=32, seed=4), quiet=True, keep_best=False)
    assert not _states_equal(runs[0], other.state_dict())


def test_lottery_controls_leave_the_global_rng_alone():
    results = []
    for _ in range(2):
        model = _mlp()
        pk.prune_magnitude(model, 0.5)
        _, untouched = _rng_untouched(lambda: lottery.reinitialize(model, seed=2))
        assert untouched
        _, untouched = _rng_untouched(lambda: lottery.random_masks(model, seed=2))
        assert untouched
        results.append(model.state_dict())
    assert _states_equal(*results)


@pytest.mark.parametrize("method", ["random-mask", "lottery", "rigl"])
def test_seeded_methods_leave_the_global_rng_alone(method):
    results = []
    for _ in range(2):
        model, context = _mlp(), _tiny_context()
        _, untouched = _rng_untouched(lambda: methods.get(method)(model, None, 0.5, 0, context))
        assert untouched
        results.append(model.state_dict())
    assert _states_equal(*results)


def test_random_magnitude_pruning_leaves_the_global_rng_alone():
    model = _mlp()
    _, untouched = _rng_untouched(lambda: pk.prune_magnitude(model, 0.5, criterion="random", seed=1))
    assert untouched


# 5. A weight shared by two layers counts once

class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def _tied_pruned(seed=0):
    torch.manual_seed(seed)
    model = _Tied()
    pk.prune_magnitude(model, 0.5, include="^(a|b)$")  # the shared 64 weights: 32 zero
    return model


def test_tied_weight_counts_once_in_measure_and_compare():
    x = torch.randn(2, 8)
    torch.manual_seed(0)
    dense = pk.measure(_Tied(), x, latency=False)
    assert dense["params"] == 64 + 8 + 8 + 32 + 4 and dense["prunable_params"] == 64 + 32
    pruned = pk.measure(_tied_pruned(), x, latency=False)
    assert pruned["nonzeros"] == 32 + 32
    assert pk.compare(dense, pruned)["compression_ratio"] == pytest.approx(96 / 64)


def test_tied_weight_counts_once_in_sparsity():
    figures = pk.sparsity(_tied_pruned())
    assert figures["global"]["params"] == 96 and figures["global"]["zeros"] == 32
    assert figures["layers"]["a"]["zeros"] == figures["layers"]["b"]["zeros"] == 32


def test_tied_weight_round_trips_through_save_and_load(tmp_path):
    model = _tied_pruned()
    x = torch.randn(3, 8)
    for fmt in ("dense", "compressed"):
        path = pk.save(model, tmp_path / f"tied-{fmt}.safetensors", format=fmt)
        loaded = pk.load(path, model=_Tied())
        assert stored_weight(loaded.a) is stored_weight(loaded.b)  # still tied
        assert torch.equal(masks.get_mask(loaded.a), masks.get_mask(model.a))
        assert masks.get_mask(loaded.a) is masks.get_mask(loaded.b)  # one mask for both
        assert pk.sparsity(loaded)["global"] == pk.sparsity(model)["global"]
        assert torch.equal(loaded(x), model(x))
        with torch.no_grad():
            stored_weight(loaded.a).add_(1.0)  # one tensor, both layers see it, mask kept
        assert torch.equal(loaded.a.weight, loaded.b.weight)
        assert int((loaded.a.weight == 0).sum()) == 32


def test_tied_weight_saved_once(tmp_path):
    from safetensors import safe_open
    path = pk.save(_tied_pruned(), tmp_path / "tied.safetensors")
    with safe_open(str(path), framework="pt") as f:
        weights = [k for k in f.keys() if k.startswith(("a.weight", "b.weight"))]
    assert len([k for k in weights if not k.endswith("__mask")]) == 1
    assert len([k for k in weights if k.endswith("__mask")]) == 1


def test_lottery_counts_and_prunes_a_tied_weight_once():
    torch.manual_seed(0)
    model = _Tied()
    assert [n for n, _ in lottery.prunable(model)] == ["a", "head"]

    def train(net, on_step):
        return 0.0
    history = lottery.find_ticket(model, train, rounds=1, rate=0.5)
    assert int(masks.get_mask(model.a).sum()) == 32  # half of the shared weight, pruned once
    assert masks.get_mask(model.b) is masks.get_mask(model.a)  # both layers use the one mask
    assert history[1]["sparsity"] == pytest.approx(48 / 96)
    assert lottery.masks_sparsity(model, lottery.prunable(model)) == pytest.approx(48 / 96)


def test_regrowth_moves_a_tied_weight_once():
    model = _tied_pruned()
    for mode in ("rigl", "set"):
        before = masks.get_mask(model.a).clone()
        updater = dynamic.DynamicSparsity(model, mode=mode, fraction=0.5, every=1)
        x = torch.randn(4, 8)
        updater.step(x, torch.randint(0, 4, (4,)))
        mask = masks.get_mask(model.a)
        assert updater.updates == [(1, 16)]  # half of the 32 alive weights moved, once
        assert int(mask.sum()) == 32 and int((mask != before).sum()) == 32
        assert masks.get_mask(model.b) is mask


def test_tied_weight_sized_once():
    torch.manual_seed(0)
    tied, untied = _Tied(), _Tied()
    untied.b.weight = nn.Parameter(untied.a.weight.detach().clone())
    x = torch.randn(2, 8)
    size = lambda m: pk.measure(m, x, latency=False)["size_bytes"]  # noqa: E731
    assert size(untied) - size(tied) >= 64 * 4


# Noticed on the way: baking the masks of a copy must not break the original

def test_make_permanent_on_a_copy_leaves_the_original_working():
    model = _mlp()
    pk.prune_magnitude(model, 0.5)
    x = _batch()[0]
    model.eval()
    expected = model(x)
    baked = pk.make_permanent(copy.deepcopy(model))
    assert torch.equal(model(x), expected) and torch.equal(baked(x), expected)
    assert masks.masked_modules(model) and not masks.masked_modules(baked)
