"""Channel search: per-space channel ratios to a parameter, MACs or measured-latency target."""
import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.measure.macs import layer_stats, totals
from prunekit.search import channels as channel_search
from prunekit.structured import channel_spaces


def _cnn(width=16, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def _macs(model, x):
    return totals(layer_stats(model, (x,)))["macs"]


def _first_conv_matters(m):
    """A metric with known costs: each channel of the first conv costs 1 point, of the
    second 0.01."""
    return 100.0 - (16 - m[0].out_channels) - 0.01 * (16 - m[3].out_channels)


def test_channel_spaces_name_each_cuttable_space():
    model, x = _cnn(), torch.randn(2, 3, 8, 8)
    assert channel_spaces(model, x) == {"0": 16, "3": 16}  # the classifier keeps its 10


def test_search_meets_the_macs_target_spending_where_it_costs_least():
    model, x = _cnn(), torch.randn(2, 3, 8, 8)
    dense = _macs(model, x)
    found = channel_search.search_channels(model, x, _first_conv_matters, 0.5, cost="macs")
    assert found.ratios["0"] == 0.0 and model[0].out_channels == 16   # the costly space untouched
    assert _macs(model, x) / dense == pytest.approx(found.kept) and found.kept <= 0.5
    assert found.kept > 0.45  # the last step is bisected: the target is met, not overshot far
    assert found.metric == _first_conv_matters(model)
    assert set(found.removed) >= {"3", "4", "8"} and model(x).shape == (2, 10)


def test_search_gives_back_what_a_coarse_last_step_overshoots():
    # 4 costly channels, then 64 cheap ones: the greedy cuts the 64 first, then the 4,
    # whose one-channel steps overshoot a 92 % cut; the 64 must then get channels back.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    dense, x = copy.deepcopy(model), torch.randn(2, 3, 8, 8)
    metric = lambda m: 100.0 - 3 * (4 - m[0].out_channels) - 0.01 * (64 - m[3].out_channels)  # noqa: E731
    found = channel_search.search_channels(model, x, metric, 0.92, cost="macs")
    kept = {"0": model[0].out_channels, "3": model[3].out_channels}
    assert found.kept <= 0.08 and kept["0"] < 4 and kept["3"] < 64
    for name, count in kept.items():  # one channel more anywhere breaks the target
        trial = copy.deepcopy(dense)
        widths = {"0": 4, "3": 64}
        more = {n: 1 - (k + (n == name)) / widths[n] for n, k in kept.items()}
        channel_search.apply_ratios(trial, x, more)
        assert _macs(trial, x) / _macs(dense, x) > 0.08


def test_joint_search_sees_cuts_that_only_hurt_together():
    # Spaces "3" and "6" each cost next to nothing alone, but cutting both costs 10 points.
    # The one-space curves cannot see that; the joint greedy scores each step on top of
    # the cuts already made, so it cuts the first conv instead of the second of the pair.
    torch.manual_seed(0)
    model = nn.Sequential(*[layer for c_in in (3, 16, 16) for layer in
                            (nn.Conv2d(c_in, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())],
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    x = torch.randn(2, 3, 8, 8)

    def metric(m):
        cut = {i: 16 - m[i].out_channels for i in (0, 3, 6)}
        return 100.0 - 0.05 * cut[0] - 0.001 * (cut[3] + cut[6]) - 10.0 * (cut[3] > 0 and cut[6] > 0)

    grid = (0.0, 0.125, 0.25)
    additive = channel_search.search_channels(copy.deepcopy(model), x, metric, 0.3, grid=grid)
    joint = channel_search.search_channels(model, x, metric, 0.3, grid=grid, joint=True)
    assert additive.metric < 90.1  # the trap: both of the pair cut
    assert joint.kept <= 0.7 and joint.metric > 99 and min(joint.ratios["3"], joint.ratios["6"]) == 0
    assert [name for name, _ in joint.path][-1] == "0" and joint.metric == metric(model)


def test_search_floor_gives_the_cheapest_allocation_above_the_floor():
    model, x = _cnn(), torch.randn(2, 3, 8, 8)
    # floor 0.99: one point may go. The second conv's 14 channels (grid top 0.875) cost 0.14;
    # a single channel of the first conv would then cost too much.
    found = channel_search.search_channels_floor(model, x, _first_conv_matters, 0.99, cost="params")
    assert found.ratios == {"0": 0.0, "3": 0.875}
    assert model[0].out_channels == 16 and model[3].out_channels == 2
    assert found.metric == pytest.approx(100 - 0.14)


def test_uniform_ratio_meets_the_target():
    model, x = _cnn(), torch.randn(2, 3, 8, 8)
    ratio = channel_search.uniform_ratio(model, x, 0.5, cost="params")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731

    def kept(r):
        trial = copy.deepcopy(model)
        channel_search.apply_ratios(trial, x, {"0": r, "3": r})
        return count(trial) / count(model)
    assert kept(ratio) <= 0.5 < kept(ratio - 1 / 16)  # one channel fewer per space misses it


def test_latency_cost_is_measured_against_the_dense_model():
    model, x = _cnn(width=64), torch.randn(4, 3, 32, 32)
    kept = channel_search.cost_meter("latency", x, repeats=5)
    trial = copy.deepcopy(model)
    channel_search.apply_ratios(trial, x, {"0": 0.875, "3": 0.875})
    assert kept(model, trial) < 0.8   # 64 -> 8 channels: far fewer MACs, clearly faster


@pytest.mark.parametrize("call, message", [
    (lambda m, x: channel_search.search_channels(m, x, _first_conv_matters, 0.5, cost="flops"), "cost must be"),
    (lambda m, x: channel_search.search_channels(m, x, _first_conv_matters, 1.5), "target must be"),
    (lambda m, x: channel_search.search_channels(m, x, _first_conv_matters, 0.99), "out of reach"),
    (lambda m, x: channel_search.search_channels(m, x, _first_conv_matters, 0.99, joint=True),
     "macs target .* out of reach"),
    (lambda m, x: channel_search.search_channels_floor(m, x, _first_conv_matters, 0.0), "floor must be"),
])
def test_bad_targets_are_refused_and_the_model_is_unchanged(call, message):
    model, x = _cnn(), torch.randn(2, 3, 8, 8)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(pk.PruneError, match=message):
        call(model, x)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("joint", [[], ["--joint"]])
def test_cli_search_structured_to_a_macs_target(tmp_path, joint):
    from prunekit import zoo
    from prunekit.cli import main
    torch.manual_seed(0)
    model = zoo.build("lenet300", in_features=64)
    pk.save(model, tmp_path / "m.safetensors")
    code = main(["search", str(tmp_path / "m.safetensors"), str(tmp_path / "s.safetensors"), "--dataset", "digits",
                 "--structured", "--cost", "macs", "--target", "0.5", "--quiet", "--json", str(tmp_path / "s.json"),
                 *joint])
    assert code == 0
    searched, x = pk.load(tmp_path / "s.safetensors"), torch.randn(4, 64)
    assert _macs(searched, x) / _macs(model, x) <= 0.5
    assert set(__import__("json").loads((tmp_path / "s.json").read_text())["allocation"]) == {"net.1", "net.3"}


@pytest.mark.parametrize("extra", [["--cost", "latency", "--target", "0.5"], ["--target", "0.5", "--floor", "0.99"], [],
                                   ["--cost", "macs", "--floor", "0.99"], ["--joint", "--target", "0.5"],
                                   ["--structured", "--joint", "--floor", "0.99"]])
def test_cli_search_refuses_bad_requests_and_writes_nothing(tmp_path, extra, capsys):
    from prunekit import zoo
    from prunekit.cli import main
    pk.save(zoo.build("lenet300", in_features=64), tmp_path / "m.safetensors")
    code = main(["search", str(tmp_path / "m.safetensors"), str(tmp_path / "s.safetensors"), "--dataset", "digits",
                 "--quiet", *extra])
    assert code == 2 and not (tmp_path / "s.safetensors").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
