"""The review's findings on search/ (issue 14): hybrid's adaptive trial, and the MAC-weighted searches."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit as pk
from prunekit.measure.macs import layer_stats
from prunekit.search import channels, hybrid, layerwise
from prunekit.targets import effective_tensors


class _Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0, self.conv1 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(torch.relu(self.conv1(torch.relu(self.conv0(x)))), 1).flatten(1))


class _Embedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc, self.out = nn.Embedding(20, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, tokens):
        return self.out(torch.relu(self.fc(self.emb(tokens).mean(1))))


class _Functional(nn.Module):
    """A weight passed to F.linear, not held by an nn.Linear."""
    def __init__(self):
        super().__init__()
        self.w, self.b, self.out = nn.Parameter(torch.randn(16, 8)), nn.Parameter(torch.zeros(16)), nn.Linear(16, 4)

    def forward(self, x):
        return self.out(torch.relu(F.linear(x, self.w, self.b)))


def _built(cls, x):
    torch.manual_seed(0)
    return cls(), x


MODELS = {"cnn": lambda: _built(_Cnn, torch.randn(2, 3, 8, 8)),
          "embedding": lambda: _built(_Embedding, torch.randint(0, 20, (4, 5))),
          "functional": lambda: _built(_Functional, torch.randn(4, 8))}


def _weights(model):
    """{tensor name: (entries, zeros)} of every weight (2-D or more) as the forward sees it
    (masks applied), whatever holds it."""
    return {n: (t.numel(), int((t == 0).sum())) for n, t, is_param, _ in effective_tensors(model)
            if is_param and t.dim() >= 2}


@pytest.mark.parametrize("name", MODELS)
def test_adaptive_trials_zero_the_same_weights_worth_tensor_by_tensor(name):
    # The structured trial removes a space's channels from its producers AND consumers; the
    # masked trial must zero as many weights in each of those tensors, not all of them in
    # the producers (which, clamped at 100 %, wiped the first conv out), and must not crash
    # on an Embedding or a weight that no nn.Linear holds.
    model, x = MODELS[name]()
    dense, seen = _weights(model), []
    report = hybrid.adaptive_hybrid(model, (x,), 0.6, lambda m: seen.append(_weights(m)) or 1.0)
    assert len(seen) == 2 * len(report.trials) and report.trials
    for structured, masked in zip(seen[::2], seen[1::2]):
        removed = {n: dense[n][0] - structured[n][0] for n in dense}
        assert any(removed.values())
        assert {n: masked[n][1] for n in dense} == removed
        assert all(masked[n][0] == dense[n][0] for n in dense)  # masked, nothing removed
    assert report.sparsity > 0.6 - 0.01  # cutting half of every space may overshoot; whole weights round
    assert model(x).shape[-1] in (4, 10)


def test_adaptive_hybrid_still_keeps_the_space_that_is_cheap_to_cut():
    model, x = MODELS["cnn"]()

    def value(m):  # removing conv0's channels costs a lot; masking any weights costs little
        return 1.0 - 0.5 * (1 - m.conv0.out_channels / 16) - 0.01 * pk.sparsity(m)["global"]["sparsity"]

    report = hybrid.adaptive_hybrid(model, (x,), 0.7, value)
    assert report.choices == {"conv0": "unstructured", "conv1": "structured"}
    assert model.conv0.out_channels == 16 and model.conv1.out_channels == 8


class _Unused(nn.Module):
    """A prunable layer that forward never calls: it has no MACs."""
    def __init__(self):
        super().__init__()
        self.a, self.unused, self.b = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _fidelity(dense, x):
    with torch.no_grad():
        ref = dense(x)

    def metric(m):
        with torch.no_grad():
            return float(1 - (m(x) - ref).norm() / ref.norm())
    return metric


def _macs_removed(model, x, sizes):
    return sum(sizes[n] * pk.sparsity(model)["layers"][n]["sparsity"] for n in sizes) / sum(sizes.values())


def test_macs_search_passes_over_a_layer_with_no_macs():
    torch.manual_seed(0)
    model, x = _Unused(), torch.randn(8, 16)
    sizes = {s["name"]: s["macs"] for s in layer_stats(model, (x,))}
    assert sizes["unused"] == 0
    found = layerwise.search(model, _fidelity(copy.deepcopy(model), x), 0.5, sizes=sizes)
    assert found.sparsities["unused"] == 0.0   # pruning it saves no MACs
    assert _macs_removed(model, x, sizes) == pytest.approx(0.5, abs=1e-3)


def test_macs_search_reads_only_the_searched_layers_sizes_and_names_a_missing_one():
    torch.manual_seed(0)
    model, x = _Unused(), torch.randn(8, 16)
    metric, sizes = _fidelity(copy.deepcopy(model), x), {s["name"]: s["macs"] for s in layer_stats(model, (x,))}
    found = layerwise.search(copy.deepcopy(model), metric, 0.3, sizes=sizes, include=["^a$", "^b$"])
    assert set(found.sparsities) == {"a", "b"}   # the statistics of a layer not searched are ignored
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(pk.PruneError, match="'b'"):
        layerwise.search(model, metric, 0.3, sizes={"a": sizes["a"], "unused": 0})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_macs_search_refuses_layers_with_no_macs_at_all():
    torch.manual_seed(0)
    model, x = _Unused(), torch.randn(8, 16)
    with pytest.raises(pk.PruneError, match="MACs|size"):
        layerwise.search(model, _fidelity(copy.deepcopy(model), x), 0.3, sizes={"unused": 0}, include=["^unused$"])


def test_channel_search_by_macs_with_an_uncalled_layer():
    torch.manual_seed(0)
    model, x = _Unused(), torch.randn(8, 16)
    dense = copy.deepcopy(model)
    found = channels.search_channels(model, x, _fidelity(dense, x), 0.4, cost="macs")
    macs = lambda m: sum(s["macs"] for s in layer_stats(m, (x,)))  # noqa: E731
    assert found.kept == pytest.approx(macs(model) / macs(dense)) and found.kept <= 0.6


class _FunctionalOnly(nn.Module):
    """Every weight passed to F.linear: no Conv/Linear layer, so no MACs are counted."""
    def __init__(self):
        super().__init__()
        self.w1, self.w2 = nn.Parameter(torch.randn(16, 8)), nn.Parameter(torch.randn(4, 16))

    def forward(self, x):
        return F.linear(torch.relu(F.linear(x, self.w1)), self.w2)


def test_channel_search_by_macs_on_a_model_without_counted_macs_is_refused():
    torch.manual_seed(0)
    model, x = _FunctionalOnly(), torch.randn(4, 8)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(pk.PruneError, match="MACs"):
        channels.search_channels(model, x, _fidelity(copy.deepcopy(model), x), 0.3, cost="macs")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
