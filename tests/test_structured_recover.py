"""pk.prune_structured(recover=True): layers that lost input channels are re-fitted by least
squares on calibration inputs to give the dense layer's outputs."""
import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from helpers import make_mlp, randomize_norms


def convnet():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 24, 3, padding=1, stride=2), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.Conv2d(24, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    return randomize_norms(model)


def error(model, dense, x):
    with torch.no_grad():
        return float((model(x) - dense(x)).pow(2).mean())


@pytest.mark.parametrize("build, shape", [(convnet, (64, 3, 16, 16)), (lambda: make_mlp(20, 64, 48, 10), (256, 20))])
def test_recovery_brings_the_outputs_closer_to_the_dense_model(build, shape):
    dense = build().eval()
    calibration = [torch.randn(*shape, generator=torch.Generator().manual_seed(1))]
    held_out = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    errors = {}
    for recover in (False, True):
        model = copy.deepcopy(dense)
        result = pk.prune_structured(model, calibration[0][:2], ratio=0.5, calibration=calibration, recover=recover)
        assert bool(result.recovered) == recover
        errors[recover] = (error(model, dense, calibration[0]), error(model, dense, held_out))
    assert errors[True][0] < 0.5 * errors[False][0] and errors[True][1] < errors[False][1], errors


def test_a_refitted_linear_fits_as_well_as_least_squares_with_an_intercept():
    """The refit's error on the calibration inputs is lstsq's optimum (up to the small ridge)."""
    dense = make_mlp(12, 40, 8).eval()
    x = torch.randn(500, 12, generator=torch.Generator().manual_seed(3))
    model = copy.deepcopy(dense)
    result = pk.prune_structured(model, x[:2], ratio=0.5, calibration=[x], recover=True)
    assert result.recovered == ["2"]
    kept = [i for i in range(40) if i not in result.removed["2"]["in"]]
    with torch.no_grad():
        hidden = torch.relu(dense[0](x))[:, kept]
        target = dense(x)
    design = torch.cat([hidden, torch.ones(len(x), 1)], 1).double()
    solution = torch.linalg.lstsq(design, target.double()).solution.float()
    optimum = float((design.float() @ solution - target).pow(2).mean())
    assert error(model, dense, x) <= 1.01 * optimum
    assert torch.allclose(model[2].weight, solution[:-1].t(), atol=0.01)


def test_without_calibration_the_example_inputs_are_used():
    dense = make_mlp(6, 32, 4).eval()
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(4))
    model = copy.deepcopy(dense)
    assert pk.prune_structured(model, x, ratio=0.25, recover=True).recovered == ["2"]
    assert error(model, dense, x) < error(pk.prune_structured(copy.deepcopy(dense), x, ratio=0.25).model, dense, x)


def test_a_classifier_behind_a_global_pool_is_fitted_per_position(monkeypatch):
    """Eight images give the classifier 8 rows for 16 inputs: too few, so it is fitted on the 8 x 64
    positions of the map it pools; that beats re-fitting its bias alone, on held-out images."""
    from prunekit.structured import recover
    dense = convnet().eval()
    calibration = [torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(5))]
    held_out = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    assert recover._pooled_map(dense, dense[10], calibration[0]) == "7"
    mlp = make_mlp(6, 8, 4)
    assert recover._pooled_map(mlp, mlp[2], torch.randn(2, 6)) is None

    def pruned_error():
        model = copy.deepcopy(dense)
        pk.prune_structured(model, calibration[0][:2], ratio=0.5, calibration=calibration, recover=True)
        return error(model, dense, held_out)
    per_position = pruned_error()
    monkeypatch.setattr(recover, "_per_position", lambda *args: None)
    assert per_position < 0.9 * pruned_error()
