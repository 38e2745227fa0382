import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit import zoo


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.Sigmoid(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(24 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 5))

    def forward(self, x):
        return self.head(self.body(x))


def randomize_bn(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.eval()


def dead_copy(model, removed):
    """The original with every removed input slice zeroed: it must compute what the pruned model does."""
    dead = copy.deepcopy(model)
    modules = dict(dead.named_modules())
    with torch.no_grad():
        for name, dims in removed.items():
            if dims["in"]:
                modules[name].weight[:, dims["in"]] = 0
    return dead


@pytest.mark.parametrize("build, shape", [
    (ConvBN, (4, 3, 8, 8)), (lambda: zoo.build("lenet5"), (4, 1, 28, 28)),
    (lambda: zoo.build("lenet300"), (4, 1, 28, 28))])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_dead_channel_equivalence(build, shape, ratio):
    torch.manual_seed(1)
    model = randomize_bn(build())
    x = torch.randn(*shape)
    original = copy.deepcopy(model)
    result = pk.prune_structured(model, x, ratio=ratio)
    assert result.params_after < result.params_before
    expected = dead_copy(original, result.removed)(x)
    assert torch.allclose(result.model(x), expected, atol=1e-5, rtol=1e-4)
    assert result.model(x).shape == original(x).shape


def test_removed_indices_are_original_and_lowest_norm():
    model = zoo.build("lenet300")
    norms = model.net[1].weight.detach().norm(dim=1)
    result = pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.5)
    gone = result.removed["net.1"]["out"]
    assert len(gone) == 150
    assert set(gone) == set(torch.argsort(norms)[:150].tolist())
    assert result.removed["net.3"]["in"] == sorted(gone)
    assert "net.5" not in result.removed or not result.removed["net.5"]["out"]  # output layer kept


def test_round_to_and_at_least_one_channel():
    model = zoo.build("lenet300")
    pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.5, round_to=8)
    assert model.net[1].out_features % 8 == 0 and model.net[3].out_features % 8 == 0
    model = zoo.build("lenet300")
    pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.999)
    assert model.net[1].out_features == 1 and model.net[3].in_features == 1


def test_structured_model_trains():
    model = ConvBN()
    pk.prune_structured(model, torch.randn(2, 3, 8, 8), ratio=0.5)
    loss = model(torch.randn(2, 3, 8, 8)).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.b(self.a(x) + x)


@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": 1.0}, "ratio"), ({"ratio": -0.5}, "ratio"), ({"ratio": float("nan")}, "ratio"),
    ({"ratio": 0.5, "importance": "magic"}, "importance"),
    ({"ratio": 0.5, "round_to": 0}, "round_to"),
])
def test_bad_input_refused_model_unchanged(kwargs, message):
    model = zoo.build("lenet5")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(pk.PruneError, match=message):
        pk.prune_structured(model, torch.randn(1, 1, 28, 28), **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unmappable_op_is_named_not_guessed():
    model = Residual()
    with pytest.raises(pk.PruneError, match="add"):
        pk.prune_structured(model, torch.randn(1, 4), ratio=0.5)
    assert model.a.out_features == 4


def test_ignore_leaves_layer_whole():
    model = zoo.build("lenet300")
    pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.5, ignore=["net.1"])
    assert model.net[1].out_features == 300 and model.net[3].out_features == 50
