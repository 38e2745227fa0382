"""Pruning over training: schedules, N:M, dynamic regrowth, lottery tickets, allocation."""
import copy
import json

import pytest
import torch
import torchvision
from torch import nn

import prunekit as pk
from helpers import make_mlp
from prunekit import masks
from prunekit.criteria.group import units as search_units
from prunekit.search import hybrid
from prunekit.search import layerwise as search
from prunekit.training import lottery, soft
from prunekit.training.dynamic import DynamicSparsity
from prunekit.training.schedules import GradualPruner, Schedule
from prunekit.training.soft import SoftChannelPruner
from prunekit.unstructured import allocate


def _mlp(seed=0):
    return make_mlp(64, 48, 32, 10, seed=seed, flatten=True)


def _batch(seed=1, n=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def _sgd_steps(model, steps, on_step, seed=1):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for t in range(steps):
        x, y = _batch(seed + t)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        on_step(x, y)


def test_cubic_schedule_matches_zhu_gupta():
    s = Schedule(final=0.9, initial=0.1, begin=10, end=110, every=10, kind="cubic")
    for t in (10, 35, 60, 85, 110):
        expected = 0.9 + (0.1 - 0.9) * (1 - (t - 10) / 100) ** 3
        assert s.sparsity_at(t) == pytest.approx(expected)
    assert s.sparsity_at(0) == 0.1 and s.sparsity_at(500) == 0.9
    assert [t for t in range(0, 130) if s.due(t)] == list(range(10, 111, 10))
    lin = Schedule(final=0.8, begin=0, end=100, kind="linear")
    assert lin.sparsity_at(25) == pytest.approx(0.2)
    assert Schedule(final=0.5, begin=7, kind="constant", end=7).sparsity_at(6) == 0.0


@pytest.mark.parametrize("bad", [dict(final=1.0, end=5), dict(final=0.5, begin=5, end=2),
                                 dict(final=0.5, end=5, kind="cosine"), dict(final=0.5, end=5, every=0),
                                 dict(final=0.5, end=5, every=True)])
def test_schedule_refuses_bad_settings(bad):
    with pytest.raises(pk.PruneError):
        Schedule(**bad)


def test_gradual_pruner_follows_the_schedule_and_masks_only_grow():
    model = _mlp()
    schedule = Schedule(final=0.8, begin=2, end=20, every=3)
    pruner = GradualPruner(model, schedule, scope="layer")
    seen = []

    def on_step(x, y):
        pruner.step()
        seen.append([masks.get_mask(m).clone() for _, m, _ in masks.masked_modules(model)])

    _sgd_steps(model, 19, on_step)
    assert not pruner.done
    _sgd_steps(model, 5, on_step, seed=20)
    assert pruner.done
    assert [t for t, _ in pruner.history] == [t for t in range(25) if schedule.due(t) and schedule.sparsity_at(t) > 0]
    for (t, reached) in pruner.history:
        assert reached == pytest.approx(schedule.sparsity_at(t), abs=2e-3)
    assert pk.sparsity(model)["global"]["sparsity"] == pytest.approx(0.8, abs=2e-3)
    for before, after in zip(seen, seen[1:]):  # nothing pruned comes back
        for a, b in zip(before, after):
            assert not (b & ~a).any()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 8)])
def test_nm_pattern_is_exact_on_linear_conv_and_transposed(n, m):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 8, 3, groups=1), nn.ConvTranspose2d(8, 8, 2),
                          nn.Flatten(), nn.LazyLinear(16))
    model(torch.randn(1, 3, 12, 12))
    report = pk.prune_nm(model, n, m)
    assert report.skipped == ["0"]  # 3 input channels cannot hold any N:M pattern
    for layer, dim in ((model[1], 1), (model[2], 0), (model[4], 1)):
        groups = layer.weight.detach().movedim(dim, -1).reshape(-1, m)
        assert ((groups != 0).sum(1) == n).all()
        kept = masks.get_mask(layer).movedim(dim, -1).reshape(-1, m)
        raw = masks.raw_tensor(layer).detach().movedim(dim, -1).reshape(-1, m)
        # the kept ones are the largest |w| of their group (raw is zeroed where pruned, so
        # compare against the weights before pruning via the smallest kept vs pruned values)
        assert kept.sum(1).eq(n).all() and (raw[~kept] == 0).all()
    assert report.sparsity == pytest.approx(1 - n / m)


def test_nm_keeps_the_largest_of_each_group():
    layer = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -3.0, 2.0, 0.2, 5.0, 0.0, -0.3, 0.4]]))
    pk.prune_nm(layer, 2, 4)
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[0.0, -3.0, 2.0, 0.0, 5.0, 0.0, 0.0, 0.4]]))


def test_nm_refuses_bad_n_m_and_leaves_model_unchanged():
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    for n, m in ((4, 4), (0, 4), (2, 3.5)):
        with pytest.raises(pk.PruneError):
            pk.prune_nm(model, n, m)
    with pytest.raises(pk.PruneError, match="divisible by m=4: <model>"):
        pk.prune_nm(nn.Linear(3, 4), 2, 4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("mode", ["rigl", "set"])
def test_dynamic_sparsity_moves_weights_at_constant_sparsity(mode):
    model = _mlp()
    pk.prune_magnitude(model, 0.8, scope="layer")
    counts = {n: int(masks.get_mask(m).sum()) for n, m, _ in masks.masked_modules(model)}
    start = {n: masks.get_mask(m).clone() for n, m, _ in masks.masked_modules(model)}
    updater = DynamicSparsity(model, mode=mode, fraction=0.3, every=5, end=40, seed=0)
    _sgd_steps(model, 30, updater.step)
    assert len(updater.updates) == 6 and all(moved > 0 for _, moved in updater.updates)
    for name, module, _ in masks.masked_modules(model):
        mask = masks.get_mask(module)
        assert int(mask.sum()) == counts[name]  # sparsity exactly constant, per layer
        assert (mask != start[name]).any()      # and the connectivity did change
        assert (module.weight[~mask] == 0).all()  # (a dropped weight's raw value may drift with
        # the optimizer's momentum; it is zeroed again if it is ever regrown)


def test_rigl_grows_where_the_dense_gradient_is_largest():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.5, 0.0, 0.0]]))
    masks.attach(layer, torch.tensor([[True, True, False, False]]))
    updater = DynamicSparsity(layer, mode="rigl", fraction=0.5, every=1,
                              loss_fn=lambda out, y: (out - y).pow(2).sum())
    x, y = torch.tensor([[0.0, 0.0, 0.1, 3.0]]), torch.tensor([[10.0]])
    updater.step(x, y)  # drops the smaller active (0.5), grows input 3 (largest |gradient|)
    assert masks.get_mask(layer).tolist() == [[True, False, False, True]]


def test_lottery_rewinds_survivors_to_their_initial_values():
    model = _mlp()
    initial = lottery.snapshot(model)
    runs = []

    def train(net, on_step):
        _sgd_steps(net, 5, on_step)
        runs.append(lottery.snapshot(net))
        return len(runs)

    history = lottery.find_ticket(model, train, rounds=2, rate=0.5, overrides={"5": 0.25})
    assert [h["round"] for h in history] == [0, 1, 2] and [h["result"] for h in history] == [1, 2, 3]
    layer = masks.get_mask(model[1])
    assert int(layer.sum()) == round(64 * 48 * 0.25)           # 50 % of what was alive, twice
    assert int(masks.get_mask(model[5]).sum()) == 320 - 80 - 60  # the output layer at 25 % per round
    # round 2 started from the initial weights under its mask: replay it from there
    check = _mlp()
    lottery.rewind(check, initial)
    for name, module, _ in masks.masked_modules(model):
        masks.attach(dict(check.named_modules())[name], masks.get_mask(module).clone())
    _sgd_steps(check, 5, lambda x, y: None)
    assert all(torch.allclose(check.state_dict()[k], model.state_dict()[k]) for k in check.state_dict())


def test_lottery_rewind_to_step_k_and_controls():
    model = _mlp()
    recorded = {}

    def train(net, on_step):  # trains in round 0 only, so the ticket is left at its rewind point
        def record(x, y):
            on_step(x, y)
            recorded[len(recorded) + 1] = lottery.snapshot(net)
        if not recorded:
            _sgd_steps(net, 4, record)
        return 0.0

    lottery.find_ticket(model, train, rounds=1, rate=0.5, rewind_to=2)
    mask = masks.get_mask(model[1]).clone()
    assert torch.equal(model[1].bias, recorded[2]["1.bias"])
    assert torch.equal(masks.raw_tensor(model[1]), recorded[2]["1.weight"] * mask)
    assert not torch.equal(recorded[2]["1.bias"], recorded[4]["1.bias"])
    kept_before = int(mask.sum())
    lottery.random_masks(model, seed=3)
    assert int(masks.get_mask(model[1]).sum()) == kept_before
    assert not torch.equal(masks.get_mask(model[1]), mask)
    before = masks.raw_tensor(model[1]).detach().clone()
    lottery.reinitialize(model, seed=5)
    after = masks.raw_tensor(model[1]).detach()
    assert not torch.equal(before, after) and (after[~masks.get_mask(model[1])] == 0).all()
    bound = 1 / 64 ** 0.5  # Linear's own init: |w| <= 1/sqrt(fan_in)
    assert after.abs().max() <= bound and after.abs().max() > bound / 2
    assert model(_batch()[0]).shape == (32, 10)  # the masked layers still work


def test_erk_allocation_keeps_the_budget_and_favours_small_layers():
    model = torchvision.models.resnet18()
    targets = allocate.layer_sparsities(model, 0.9, "erk")
    modules = dict(model.named_modules())
    kept = sum((1 - s) * modules[n].weight.numel() for n, s in targets.items())
    total = sum(modules[n].weight.numel() for n in targets)
    assert kept / total == pytest.approx(0.1, rel=1e-6)
    assert targets["conv1"] < targets["layer4.1.conv2"]  # the 3-channel stem is kept denser
    assert 0 <= min(targets.values()) and max(targets.values()) < 1


def test_lamp_and_global_allocations_reach_the_target():
    for method in ("lamp", "global", "uniform"):
        model = _mlp()
        reached = allocate.prune_allocated(model, 0.75, method)
        assert pk.sparsity(model)["global"]["sparsity"] == pytest.approx(0.75, abs=1e-3)
        assert set(reached) == {"1", "3", "5"}
    scores = allocate.lamp_scores(torch.tensor([3.0, 1.0, 2.0]))
    assert scores.tolist() == pytest.approx([9 / 9, 1 / 14, 4 / 13])


def _known_sensitivity(model):
    """A 'validation metric' with known costs: layer 3 is expensive to prune, layer 1 cheap."""
    layers = pk.sparsity(model)["layers"]
    return 1.0 - 0.01 * layers["1"]["sparsity"] - 0.5 * layers["3"]["sparsity"] - 0.1 * layers["5"]["sparsity"]


def test_sensitivity_prunes_one_layer_at_a_time_on_copies():
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    curves = search.sensitivity(model, _known_sensitivity, sparsities=(0.5, 0.9))
    assert curves["dense"] == 1.0
    assert curves["1"] == pytest.approx({0.5: 0.995, 0.9: 0.991}, abs=1e-5)
    assert curves["3"] == pytest.approx({0.5: 0.75, 0.9: 0.55}, abs=1e-3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_search_spends_the_budget_where_it_costs_least():
    model = _mlp()
    result = search.search(model, _known_sensitivity, 0.5)
    assert result.sparsities["3"] == 0.0 and result.sparsities["5"] == 0.0  # the costly ones are spared
    assert result.sparsities["1"] >= 0.8      # the cheap (and largest) layer takes the cut
    assert result.sparsity >= 0.5
    assert result.metric == pytest.approx(_known_sensitivity(model))  # measured on the model itself
    assert pk.sparsity(model)["layers"]["1"]["sparsity"] == pytest.approx(result.sparsities["1"], abs=1e-3)


def test_search_floor_is_the_sparsest_allocation_above_the_floor():
    model = _mlp()
    result = search.search_floor(model, _known_sensitivity, 0.95)
    # layer 1 all the way (costs 0.0099), then layer 5 (0.1 per unit of sparsity) until the
    # next grid step (0.3 -> 0.5) would cost more than the 0.05 the floor allows
    assert result.sparsities == {"1": 0.99, "3": 0.0, "5": 0.3}
    assert result.metric >= 0.95 and result.metric == pytest.approx(_known_sensitivity(model))


def test_cli_sensitivity_writes_curves_and_plot(tmp_path):
    from prunekit.cli import main
    pk.save(_digits_mlp(), tmp_path / "m.safetensors")
    code = main(["sensitivity", str(tmp_path / "m.safetensors"), "--dataset", "digits", "--sparsities", "0.5,0.9",
                 "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png"), "--quiet"])
    assert code == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert set(result["layers"]) == {"net.1", "net.3", "net.5"}
    assert set(result["layers"]["net.1"]) == {"0.5", "0.9"}
    assert (tmp_path / "s.png").stat().st_size > 1000


def _digits_mlp():
    from prunekit import zoo
    torch.manual_seed(0)
    return zoo.build("lenet300", in_features=64)


def _small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))


def _cnn_steps(model, steps, on_step):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for t in range(steps):
        g = torch.Generator().manual_seed(t)
        x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        on_step(x, y)


@pytest.mark.parametrize("mode", ["mask", "zero"])
def test_soft_channel_pruning_zeroes_then_removes_exactly(mode):
    model, x = _small_cnn(), torch.randn(2, 3, 8, 8)
    pruner = SoftChannelPruner(model, (x,), Schedule(final=0.5, begin=0, end=12, every=4), mode=mode)
    _cnn_steps(model, 11, pruner.step)
    assert not pruner.done
    _cnn_steps(model, 1, pruner.step)
    assert pruner.done
    assert [t for t, _ in pruner.history] == [4, 8, 12]
    if mode == "mask":  # masked channels only ever grow, and stay exactly zero while training
        assert pruner.history[0][1] < pruner.history[-1][1]
        assert (model[1].weight == 0).sum() == 8
    model.eval()
    pruner._update(0.5)
    zeroed = copy.deepcopy(model)  # the final choice zeroed on the whole producing side
    soft._zero_units(zeroed, pruner.graph, search_units(pruner.graph), pruner.zeroed, False, ("out", "follow"))
    with torch.no_grad():
        zeroed_out = zeroed(x)
    result = pruner.finish()
    assert model[0].out_channels == 8 and model[3].out_channels == 12 and model[8].in_features == 12
    with torch.no_grad():
        torch.testing.assert_close(model(x), zeroed_out, rtol=1e-5, atol=1e-5)  # removal changes nothing
    assert not masks.masked_modules(model) and result.params_after < result.params_before


def test_soft_filter_pruning_lets_zeroed_channels_recover():
    model = _small_cnn()
    pruner = SoftChannelPruner(model, (torch.randn(2, 3, 8, 8),), Schedule(final=0.5, begin=1, end=1, kind="constant"),
                               mode="zero")
    with torch.no_grad():  # a trained BatchNorm shift: at 0 the ReLU after it would block the gradient
        model[1].bias.fill_(0.1)
    pruner.step()  # step 1: half the channels zeroed (no optimizer step yet)
    zeroed = (model[0].weight.flatten(1) == 0).all(1)
    assert int(zeroed.sum()) == 8 and (model[1].weight[zeroed] != 0).all()  # BatchNorm left as is
    _cnn_steps(model, 1, lambda x, y: None)  # one training step, no re-zeroing
    assert (model[0].weight[zeroed] != 0).any()  # the soft-pruned filters train again


def test_adaptive_hybrid_masks_where_channel_removal_costs_more():
    model, x = _small_cnn(), torch.randn(2, 3, 8, 8)

    def value(m):  # removing channels of the first conv is costly here; masking its weights is not
        return 1.0 - 0.5 * (1 - m[0].out_channels / 16) - 0.01 * pk.sparsity(m)["layers"]["0"]["sparsity"]

    report = hybrid.adaptive_hybrid(model, (x,), 0.7, value)
    assert report.choices == {"0": "unstructured", "3": "structured"}
    assert model[0].out_channels == 16 and model[3].out_channels == 12   # only the cheap space cut
    assert report.sparsity == pytest.approx(0.7, abs=1e-3)
    assert model(x).shape == (2, 10)


def test_regrowth_edits_an_n_m_conv_mask_in_place():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    pk.prune_nm(model, 2, 4)
    conv = model[0]
    before, kept = masks.get_mask(conv).clone(), int(masks.get_mask(conv).sum())
    DynamicSparsity(model, mode="set", fraction=0.3, every=1, seed=0).step()
    mask = masks.get_mask(conv)
    assert (mask != before).any() and int(mask.sum()) == kept
    assert int((masks.raw_tensor(conv)[mask] != 0).sum()) <= kept  # grown weights start at 0
    assert (conv.weight[~mask] == 0).all()


def test_lottery_rewinds_a_model_that_is_itself_one_layer():
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    initial = lottery.snapshot(layer)
    pk.prune_magnitude(layer, 0.5)
    assert set(lottery.snapshot(layer)) == {"weight", "bias"}
    with torch.no_grad():
        masks.raw_tensor(layer).add_(1.0)
    lottery.rewind(layer, initial)
    keep = masks.get_mask(layer)
    assert torch.equal(layer.weight[keep], initial["weight"][keep])


def test_allocation_refuses_a_sparsity_out_of_range():
    for method in ("uniform", "erk"):
        with pytest.raises(pk.PruneError, match="sparsity"):
            allocate.layer_sparsities(_mlp(), 1.5, method)


def test_regrowth_and_lottery_refuse_settings_of_the_wrong_type():
    model = _mlp()
    pk.prune_magnitude(model, 0.5)
    for bad in (dict(fraction="a"), dict(fraction=True), dict(every=True)):
        with pytest.raises(pk.PruneError):
            DynamicSparsity(model, **bad)
    for bad in (dict(rounds=1, rate="x"), dict(rounds=True, rate=0.2)):
        with pytest.raises(pk.PruneError):
            lottery.find_ticket(_mlp(), lambda net, on_step: 0, **bad)
