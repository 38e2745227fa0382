"""Ops whose result changes with the number of channels (default attention scale, roll,
softmax or sums across channels) and bad calls: the pruned model must stay exact, or the
channels stay, or a one-line PruneError leaves the model as it was."""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import prunekit as pk


def _same_state(model, before):
    after = model.state_dict()
    return after.keys() == before.keys() and all(
        after[k].shape == v.shape and torch.equal(after[k], v) for k, v in before.items())


class Attention(nn.Module):
    """Four heads through scaled_dot_product_attention with its default 1/sqrt(head_dim)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 32), nn.Linear(16, 32), nn.Linear(16, 32)
        self.o, self.head, self.num_heads = nn.Linear(32, 16), nn.Linear(16, 5), 4

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.num_heads, -1).transpose(1, 2) for proj in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
        return self.head(x + self.o(y))


def _dead_attention(model, removed):
    """The original with every removed projection output (and o's removed inputs) zeroed."""
    dead = copy.deepcopy(model)
    with torch.no_grad():
        for name, dims in removed.items():
            layer = dead.get_submodule(name)
            if dims["out"]:
                layer.weight[dims["out"]] = 0
                layer.bias[dims["out"]] = 0
            if dims["in"]:
                layer.weight[:, dims["in"]] = 0
    return dead


@pytest.mark.parametrize("granularity", ["channel", "head"])
def test_default_attention_scale_keeps_head_dim_and_output(granularity):
    torch.manual_seed(0)
    model, x = Attention().eval(), torch.randn(2, 5, 16)
    original = copy.deepcopy(model)
    res = pk.prune_structured(model, x, ratio=0.5, granularity=granularity)
    assert res.params_after < res.params_before
    assert model.q.out_features // model.num_heads == 8  # head_dim, hence the scale, unchanged
    if granularity == "channel":  # q/k channels would change the scale: only v's go
        assert model.q.out_features == 32 and model.v.out_features == 16
    with torch.no_grad():
        torch.testing.assert_close(model(x), _dead_attention(original, res.removed)(x))


class Rolled(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.b(torch.roll(F.relu(self.a(x)), 3, dims=1))


class ChannelSoftmax(Rolled):
    def forward(self, x):
        return self.b(F.softmax(self.a(x), dim=1))


class ChannelSum(Rolled):
    def forward(self, x):
        y = F.relu(self.a(x))
        return self.b(y), y.sum(1)


@pytest.mark.parametrize("cls", [Rolled, ChannelSoftmax, ChannelSum])
def test_ops_across_channels_keep_them(cls):
    torch.manual_seed(0)
    model = cls()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(pk.PruneError, match="no prunable channels"):
        pk.prune_structured(model, torch.randn(2, 3, 8, 8), ratio=0.5)
    assert _same_state(model, before)


class FunctionalRmsNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.scale, self.b = nn.Linear(8, 32), nn.Parameter(torch.ones(32)), nn.Linear(32, 3)

    def forward(self, x):
        y = self.a(x)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6) * self.scale
        return self.b(y)


def test_normalising_statistic_is_recomputed_like_layer_norm():
    model = FunctionalRmsNorm()
    pk.prune_structured(model, torch.randn(2, 8), ratio=0.5)
    assert model.a.out_features == 16 and model.scale.shape == (16,) and model.b.in_features == 16


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Conv2d(16, 6, 1), \
            nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(F.relu(self.b(F.relu(self.bn(self.a(x))))).mean((2, 3)))


def test_a_later_step_failing_restores_the_first_steps_cuts():
    model = Net()
    before = copy.deepcopy(model.state_dict())

    def interrupted_in_step_two(weight, dim):  # step 1 leaves conv a with 12 filters
        if weight.shape[0] == 12:
            raise KeyboardInterrupt
        return weight.abs().transpose(0, dim).reshape(weight.shape[dim], -1).sum(1)
    with pytest.raises(KeyboardInterrupt):
        pk.prune_structured(model, torch.randn(2, 3, 8, 8), ratio=0.5, steps=2, importance=interrupted_in_step_two)
    assert model.a.out_channels == 16 and model.bn.num_features == 16
    assert _same_state(model, before)


@pytest.mark.parametrize("kwargs, message", [
    ({"ignore": "["}, "not a valid regex"),
    ({"ignore": ["conv_a"]}, "'conv_a' matches no module"),
    ({"ignore": 5}, "ignore entries must be"),
])
def test_bad_ignore_is_refused(kwargs, message):
    model = Net()
    with pytest.raises(pk.PruneError, match=message):
        pk.prune_structured(model, torch.randn(2, 3, 8, 8), ratio=0.5, **kwargs)
    assert model.a.out_channels == 16


def test_wrong_example_input_is_one_line_prune_error():
    model = Net()
    with pytest.raises(pk.PruneError, match=r"Net\(\*example_inputs\) failed: RuntimeError") as info:
        pk.prune_structured(model, torch.randn(2, 4, 8, 8), ratio=0.5)
    assert "\n" not in str(info.value)
    assert model.a.out_channels == 16


class GroupedAndBare(nn.Module):
    """A grouped conv, a depthwise conv, and a conv weight held as a bare parameter."""

    def __init__(self):
        super().__init__()
        self.a, self.g = nn.Conv2d(3, 16, 1), nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.dw, self.o = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 8, 1)
        self.w = nn.Parameter(torch.randn(4, 8, 1, 1))

    def forward(self, x):
        y = self.dw(F.relu(self.g(F.relu(self.a(x)))))
        return F.conv2d(F.relu(self.o(y)), self.w).mean((2, 3))


def test_removed_lists_channels_over_all_groups_and_bare_weights():
    from helpers import dead_copy
    torch.manual_seed(0)
    model, x = GroupedAndBare().eval(), torch.randn(2, 3, 8, 8)
    original = copy.deepcopy(model)
    res = pk.prune_structured(model, x, ratio=0.5)
    gone = res.removed
    assert gone["g"]["in"] == gone["a"]["out"] and len(gone["g"]["in"]) == 16 - model.g.in_channels
    assert gone["dw"]["in"] == gone["g"]["out"] == gone["o"]["in"]
    assert gone["w"]["in"] == gone["o"]["out"] and len(gone["w"]["in"]) == 8 - model.w.shape[1]
    with torch.no_grad():
        torch.testing.assert_close(model(x), dead_copy(original, gone)(x))


class TokenPool(nn.Module):
    """Mean over tokens of a (batch, tokens, channels) stream: tokens, not channels, reduced."""

    def __init__(self, width=16):
        super().__init__()
        self.a, self.b = nn.Linear(8, width), nn.Linear(width, 3)

    def forward(self, x):
        return self.b(F.relu(self.a(x)).mean(1))


def test_a_reduction_reads_its_dim_even_when_sizes_coincide():
    model = TokenPool()
    pk.prune_structured(model, torch.randn(2, 16, 8), ratio=0.5)  # 16 tokens, 16 channels
    assert model.a.out_features == 8 and model.b.in_features == 8


def test_soft_pruner_applies_ignore_like_prune_structured():
    from prunekit.training.schedules import Schedule
    from prunekit.training.soft import SoftChannelPruner
    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU(), nn.Conv2d(16, 6, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(pk.PruneError, match="'typo' matches no module"):
        SoftChannelPruner(model, x, Schedule(final=0.5, end=4), ignore=["typo"])
    pruner = SoftChannelPruner(model, x, Schedule(final=0.5, end=4), ignore=[r"^4$"])  # a regex
    for _ in range(4):
        pruner.step()
    assert (model[2].weight.detach().flatten(1).abs().sum(1) > 0).all()  # it feeds the ignored conv
    pruner.finish()
    assert model[0].out_channels == 8 and model[2].out_channels == 16 and model[4].in_channels == 16
