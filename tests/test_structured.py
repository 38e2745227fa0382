import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

import prunekit as pk
from helpers import dead_copy, randomize_norms
from prunekit import zoo
from prunekit.criteria import CHANNEL


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.Sigmoid(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(24 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 5))

    def forward(self, x):
        return self.head(self.body(x))


def conv_bn(c_in, c_out, k=3, groups=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class Kitchen(nn.Module):
    """Residuals, a 1x1 shortcut, concatenation, split, depthwise with squeeze-excitation,
    grouped conv, channel shuffle, transposed conv, GroupNorm, PReLU, a layer scale."""

    def __init__(self, norm="group"):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.res = nn.Sequential(conv_bn(16, 12), nn.Conv2d(12, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.down = nn.Sequential(conv_bn(16, 24), nn.Conv2d(24, 32, 3, padding=1), nn.BatchNorm2d(32))
        self.shortcut = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.branch_a, self.branch_b = conv_bn(32, 8, 1), conv_bn(32, 12, 3)
        self.depthwise = conv_bn(20, 20, 3, groups=20)
        self.se_reduce, self.se_expand = nn.Conv2d(20, 6, 1), nn.Conv2d(6, 20, 1)
        self.grouped = conv_bn(20, 24, 3, groups=4)
        self.mix = conv_bn(12, 12, 1)
        self.up = nn.ConvTranspose2d(24, 16, 2, stride=2)
        # GroupNorm's statistics see zeroed channels, so the equivalence test uses BatchNorm.
        self.norm = nn.GroupNorm(4, 16) if norm == "group" else nn.BatchNorm2d(16)
        self.act = nn.PReLU(16)
        self.scale = nn.Parameter(torch.rand(16) + 0.5)
        self.fc = nn.Linear(16, 7)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.res(x))
        x = F.relu(self.down(x) + self.shortcut(x))
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = self.depthwise(x)
        x = x * torch.sigmoid(self.se_expand(F.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        x = self.grouped(x)
        left, right = x.chunk(2, dim=1)
        x = torch.cat([left, self.mix(right)], dim=1)
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)  # channel shuffle
        x = self.act(self.norm(self.up(x)))
        x = x * self.scale.view(1, -1, 1, 1)
        return self.fc(x.mean((2, 3)))


MODELS = {
    "convbn": (ConvBN, (4, 3, 8, 8)),
    "kitchen": (lambda: Kitchen(norm="batch"), (2, 3, 16, 16)),
    "lenet5": (lambda: zoo.build("lenet5"), (4, 1, 28, 28)),
    "lenet300": (lambda: zoo.build("lenet300"), (4, 1, 28, 28)),
    "smallcnn": (lambda: zoo.build("smallcnn"), (4, 1, 28, 28)),
    "mnistcnn": (lambda: zoo.build("mnistcnn").eval(), (4, 1, 28, 28)),
    "resnet8": (lambda: zoo.build("resnet8"), (4, 1, 28, 28)),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (2, 3, 64, 64)),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), (2, 3, 64, 64)),
    "shufflenet_v2": (lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10), (2, 3, 64, 64)),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=10), (2, 3, 64, 64)),
    "resnext": (lambda: torchvision.models.resnext50_32x4d(num_classes=10), (1, 3, 64, 64)),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_dead_channel_equivalence(name, ratio):
    """The pruned model computes what the original computes with the removed channels
    zeroed: any wrong index at a residual, concat, group or split shows here."""
    build, shape = MODELS[name]
    torch.manual_seed(1)
    model = randomize_norms(build())
    x = torch.randn(*shape)
    original = copy.deepcopy(model)
    result = pk.prune_structured(model, x, ratio=ratio)
    assert result.params_after < result.params_before
    expected = dead_copy(original, result.removed)(x)
    got = result.model(x)
    assert got.shape == original(x).shape
    assert torch.allclose(got, expected, atol=1e-5 * expected.abs().max().item(), rtol=1e-4)


def test_kitchen_couples_every_layer():
    model = Kitchen()
    pk.prune_structured(model, torch.randn(2, 3, 16, 16), ratio=0.5)
    assert model.res[1].out_channels == model.stem[0].out_channels == 8       # one residual space
    assert model.shortcut[0].out_channels == model.down[1].out_channels == 16
    # The grouped conv (4 groups of 5 inputs) ties input j of every group: 5 units, 3 kept.
    assert model.depthwise[0].groups == model.depthwise[0].in_channels == 12  # depthwise follows
    assert model.se_expand.out_channels == 12 and model.se_reduce.out_channels == 3
    assert model.grouped[0].groups == 4 and model.grouped[0].in_channels == 12
    assert model.grouped[0].out_channels == 12  # 4 groups of 3
    assert model.norm.num_groups == 4 and model.norm.num_channels == model.up.out_channels == 8
    assert model.act.num_parameters == 8 and model.scale.shape == (8,)
    assert model.fc.out_features == 7  # the classes stay


def test_removed_indices_are_original_and_lowest_group_norm():
    model = zoo.build("lenet300")
    first, second = model.net[1], model.net[3]
    norms = (first.weight.pow(2).sum(1) + first.bias.pow(2) + second.weight.pow(2).sum(0)).detach()
    result = pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.5)
    gone = result.removed["net.1"]["out"]
    assert len(gone) == 150
    assert set(gone) == set(torch.argsort(norms)[:150].tolist())
    assert result.removed["net.3"]["in"] == sorted(gone)
    assert not result.removed.get("net.5", {}).get("out")  # output layer kept


def test_round_to_and_at_least_one_channel():
    model = zoo.build("lenet300")
    pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.5, round_to=8)
    assert model.net[1].out_features % 8 == 0 and model.net[3].out_features % 8 == 0
    model = zoo.build("lenet300")
    pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.999)
    assert model.net[1].out_features == 1 and model.net[3].in_features == 1


def test_global_scope_overrides_and_max_ratio():
    x = torch.randn(1, 1, 28, 28)
    model = zoo.build("lenet300")
    pk.prune_structured(model, x, ratio=0.5, scope="global")
    assert model.net[1].out_features + model.net[3].out_features == 200  # half of 400 in all
    model = zoo.build("lenet300")
    pk.prune_structured(model, x, ratio=0.5, overrides={r"net\.3": 0.2})
    assert (model.net[1].out_features, model.net[3].out_features) == (150, 80)
    model = zoo.build("lenet300")
    pk.prune_structured(model, x, ratio=0.9, max_ratio=0.6)
    assert (model.net[1].out_features, model.net[3].out_features) == (120, 40)  # capped at 60 %


def test_iterative_steps_reach_the_ratio_with_original_indices():
    model = zoo.build("lenet300")
    result = pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.6, steps=3)
    assert model.net[1].out_features == 120
    gone = result.removed["net.1"]["out"]
    assert len(gone) == len(set(gone)) == 180 and max(gone) < 300


@pytest.mark.parametrize("importance", CHANNEL.names())
def test_every_criterion_prunes_and_is_deterministic(importance):
    torch.manual_seed(0)
    model = randomize_norms(Kitchen())
    calibration = [(torch.randn(4, 3, 16, 16), torch.randint(0, 7, (4,))) for _ in range(2)]
    kwargs = dict(ratio=0.4, importance=importance, calibration=calibration, seed=3)
    first = pk.prune_structured(copy.deepcopy(model), torch.randn(1, 3, 16, 16), **kwargs)
    second = pk.prune_structured(copy.deepcopy(model), torch.randn(1, 3, 16, 16), **kwargs)
    assert first.params_after < first.params_before
    assert first.removed == second.removed


def test_criteria_rank_as_documented():
    x = torch.randn(1, 1, 28, 28)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[2].weight.copy_(torch.arange(1.0, 9.0))  # gamma 1..8
    result = pk.prune_structured(copy.deepcopy(model), x, ratio=0.5, importance="bn_scale")
    assert result.removed["1"]["out"] == [0, 1, 2, 3]
    dead = copy.deepcopy(model)
    with torch.no_grad():
        dead[1].weight[5:].zero_()  # channels 5..7 always zero after ReLU(BN) with beta 0
        dead[1].bias[5:].zero_()
        dead[2].bias.zero_()
        dead[2].running_mean.zero_()
    data = [torch.randn(16, 1, 28, 28)]
    result = pk.prune_structured(dead, x, ratio=3 / 8, importance="apoz", calibration=data)
    assert result.removed["1"]["out"] == [5, 6, 7]


def test_user_callable_importance():
    model = zoo.build("lenet300")
    # Score = minus the index of the output unit: the highest indices are the most important.
    result = pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.5,
                                 importance=lambda w, dim: torch.arange(w.shape[dim]).float())
    assert result.removed["net.1"]["out"] == list(range(150))


def test_structured_model_trains():
    model = Kitchen()
    pk.prune_structured(model, torch.randn(2, 3, 16, 16), ratio=0.5)
    model.train()
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


class FixedReshape(nn.Module):
    """A reshape with a hard-coded size: the trace can't know 8 is fixed, the check can."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 16), nn.Linear(8, 8), nn.Linear(4, 3)
        self.hidden = nn.Linear(4, 20)
        self.out = nn.Linear(20, 3)

    def forward(self, x):
        y = self.b(self.a(x).view(-1, 2, 8)).sum(1)
        return self.c(y[:, :4]) + self.out(F.relu(self.hidden(x)))


def test_fixed_size_ops_keep_their_channels_and_the_rest_is_pruned():
    model = FixedReshape()
    x = torch.randn(3, 4)
    original = copy.deepcopy(model)
    result = pk.prune_structured(model, x, ratio=0.5)
    assert model.hidden.out_features == 10
    assert model.a.out_features == 16 and model.b.out_features == 8  # kept whole
    assert result.kept_fixed
    assert model(x).shape == original(x).shape


@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": 1.0}, "ratio"), ({"ratio": -0.5}, "ratio"), ({"ratio": float("nan")}, "ratio"),
    ({"ratio": 0.5, "importance": "magic"}, "importance"),
    ({"ratio": 0.5, "round_to": 0}, "round_to"),
    ({"ratio": 0.5, "scope": "model"}, "scope"),
    ({"ratio": 0.5, "max_ratio": 0}, "max_ratio"),
    ({"ratio": 0.5, "overrides": {"(": 0.1}}, "regex"),
    ({"ratio": 0.5, "steps": 0}, "steps"),
    ({"ratio": 0.5, "importance": "taylor"}, "calibration"),
])
def test_bad_input_refused_model_unchanged(kwargs, message):
    model = zoo.build("lenet5")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(pk.PruneError, match=message):
        pk.prune_structured(model, torch.randn(1, 1, 28, 28), **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Unmapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.fft.fft(self.a(x)).real)


def test_unmappable_op_is_named_with_its_module():
    model = Unmapped()
    with pytest.raises(pk.PruneError, match="fft.*Unmapped"):
        pk.prune_structured(model, torch.randn(1, 4), ratio=0.5)
    assert model.a.out_features == 8


def test_failure_midway_restores_the_model(monkeypatch):
    from prunekit import graph
    model = Kitchen()
    before = copy.deepcopy(model)
    x = torch.randn(1, 3, 16, 16)

    def broken_check(*args, **kwargs):
        raise RuntimeError("simulated crash after surgery")
    monkeypatch.setattr("prunekit.structured.repair.check", broken_check)
    with pytest.raises(RuntimeError):
        pk.prune_structured(model, x, ratio=0.5)
    assert graph is not None
    assert str(model) == str(before)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values()))
    assert torch.equal(model(x), before(x))


def test_ignore_leaves_layer_whole():
    model = zoo.build("lenet300")
    pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.5, ignore=["net.1"])
    assert model.net[1].out_features == 300 and model.net[1].in_features == 784
    assert model.net[3].in_features == 300 and model.net[3].out_features == 50


def test_save_load_structured_kitchen(tmp_path):
    model = Kitchen().eval()
    x = torch.randn(1, 3, 16, 16)
    pk.prune_structured(model, x, ratio=0.5)
    pk.save(model, tmp_path / "k.safetensors")
    loaded = pk.load(tmp_path / "k.safetensors", model=Kitchen()).eval()
    assert torch.equal(loaded(x), model(x))
    assert loaded.grouped[0].groups == 4 and loaded.norm.num_channels == model.norm.num_channels


@pytest.mark.parametrize("name", ["lenet5", "smallcnn", "mnistcnn", "resnet8"])
def test_save_load_structured_zoo_model_from_data_alone(tmp_path, name):
    model, x = randomize_norms(zoo.build(name)).eval(), torch.randn(2, 1, 28, 28)
    pk.prune_structured(model, x, ratio=0.4)
    pk.save(model, tmp_path / "z.safetensors")
    loaded = pk.load(tmp_path / "z.safetensors").eval()  # no model passed: rebuilt from the file
    assert type(loaded) is type(model) and torch.equal(loaded(x), model(x))


def test_layer_granularity_removes_least_influential_residual_blocks(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # layer3.1 barely changes its input: it must be the one to go
        model.layer3[1].bn2.weight.mul_(1e-4)
        model.layer3[1].bn2.bias.zero_()
    result = pk.prune_structured(model, x, ratio=0.2, granularity="layer")
    assert result.blocks == ["layer3.1"]  # 5 blocks keep their shape: one goes
    assert result.params_after < result.params_before
    assert model(x).shape == (2, 10)
    pk.save(model, tmp_path / "r.safetensors")
    loaded = pk.load(tmp_path / "r.safetensors", model=torchvision.models.resnet18(num_classes=10)).eval()
    assert torch.equal(loaded(x), model(x))


def test_layer_granularity_refuses_models_without_blocks():
    model = zoo.build("lenet300")
    with pytest.raises(pk.PruneError, match="residual blocks"):
        pk.prune_structured(model, torch.randn(1, 1, 28, 28), ratio=0.5, granularity="layer")
    assert model.net[1].out_features == 300


class _ReadsConstants(nn.Module):
    """Reads the values of a tensor built from constants (as transformers' masks do)."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        positions = torch.arange(x.shape[1], device=x.device).to(x.device)
        if bool((positions[-1] == x.shape[1] - 1).all()):  # .item() on a meta tensor would fail
            x = x + positions.to(x.dtype)[None, :, None] * 0
        return self.down(torch.relu(self.up(x)))


class _CachesOnFirstCall(nn.Module):
    """Computes a constant from its output's values on the first call only, then reuses it
    (as YOLO's Detect head caches its anchors and their input shape)."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 1)
        self.shape, self.offset = None, None

    def forward(self, x):
        y = self.head(torch.relu(self.body(x)))
        if self.shape != y.shape:  # a path taken only when the shape is new
            self.offset = float(y[0, 0].abs().max() > -1)  # .item(): the trace runs on real tensors
            self.shape = y.shape
        return y + self.offset


def test_a_forward_that_caches_on_its_first_call_is_pruned_and_left_as_it_was():
    model, x = _CachesOnFirstCall(), torch.randn(1, 3, 8, 8)
    result = pk.prune_structured(model, x, ratio=0.5)
    assert model.body.out_channels == 8 and result.params_after < result.params_before
    assert model.shape is None and model.offset is None  # the trace and the check undid their cache
    assert model(x).shape == (1, 4, 8, 8)


def test_constants_stay_real_in_a_meta_trace():
    model, x = _ReadsConstants(), torch.randn(2, 5, 8)
    graph = pk.graph.analyze(model, (x,))
    assert graph.meta  # traced without running any arithmetic on the weights
    dense = model(x)
    res = pk.prune_structured(model, (x,), ratio=0.5)
    assert model.up.out_features == 8 and model(x).shape == dense.shape
    assert res.params_after < res.params_before


def test_structured_pruning_that_removes_nothing_says_why(caplog):
    """A reshape to a fixed channel count pins every channel: the call says so and names the op."""
    class FixedView(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            y = self.body(x)
            return self.head(y.view(y.shape[0], 8, -1).view(y.shape))

    model = FixedView()
    with caplog.at_level("WARNING"):
        result = pk.prune_structured(model, torch.randn(2, 3, 8, 8), ratio=0.5)
    assert result.params_after == result.params_before
    assert "removed nothing" in caplog.text and "view" in caplog.text
