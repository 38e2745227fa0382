"""Every registered name gets the same checks, as timm's tests do over list_models(): each
compare method reaches its target sparsity, each zoo model saves and reloads, each criterion
scores every weight or unit."""
import copy

import pytest
import torch

import prunekit as pk
from prunekit import criteria, zoo
from prunekit.graph import layers, rules
from prunekit.experiments import methods
from prunekit.experiments.methods import Context
from prunekit.measure.counts import count_params
from prunekit.train import FitConfig
from prunekit.training import lottery

ZOO_INPUTS = {"lenet300": (2, 1, 28, 28), "lenet5": (2, 1, 28, 28), "smallcnn": (2, 1, 28, 28),
              "mnistcnn": (2, 1, 28, 28), "resnet8": (2, 1, 28, 28), "mlp1d": (2, 40)}


def test_every_zoo_model_has_an_example_input():
    assert set(zoo.list_models()) == set(ZOO_INPUTS)


@pytest.mark.parametrize("name", zoo.list_models())
@pytest.mark.parametrize("form", ["masked", "structured"])
def test_every_zoo_model_saves_and_reloads(name, form, tmp_path):
    torch.manual_seed(0)
    model = zoo.build(name).eval()
    x = torch.randn(*ZOO_INPUTS[name])
    if form == "masked":
        pk.prune_magnitude(model, 0.7)
    else:
        pk.prune_structured(model, x, ratio=0.4)
    for fmt in ("dense", "compressed"):
        pk.save(model, tmp_path / f"{fmt}.safetensors", format=fmt)
        loaded = pk.load(tmp_path / f"{fmt}.safetensors").eval()
        assert type(loaded) is type(model) and str(loaded) == str(model)
        assert torch.equal(loaded(x), model(x)), fmt


def _context(digits, model):
    budget = FitConfig(epochs=1, limit=256, batch_size=64, seed=0)
    return Context(digits, budget, budget, initial=lottery.snapshot(model))


@pytest.mark.parametrize("name", methods.list_methods() + ["nm-2:4"])
def test_every_method_reaches_its_target_sparsity(name, digits):
    target = methods.fixed_sparsity(name) or 0.8
    torch.manual_seed(0)
    model = zoo.build("lenet300", in_features=64)
    dense = count_params(model)["prunable_params"]
    example = digits.test.x[:8]
    pruned = methods.get(name)(copy.deepcopy(model), example, target, 0, _context(digits, model))
    achieved = 1 - count_params(pruned)["nonzeros"] / dense
    assert achieved == pytest.approx(target, abs=0.02), name
    assert torch.isfinite(pruned(example)).all()


def test_an_unknown_method_lists_the_choices():
    with pytest.raises(pk.PruneError, match="unknown method 'sorcery'; choose from: magnitude-global, "):
        methods.get("sorcery")


@pytest.mark.parametrize("name", criteria.ELEMENTWISE.names())
def test_every_elementwise_criterion_scores_every_weight(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    pk.prune_magnitude(model, 0.5, criterion=name, seed=0)
    assert pk.sparsity(model)["global"]["sparsity"] == pytest.approx(0.5, abs=1 / 128)


@pytest.mark.parametrize("name", criteria.CHANNEL.names())
def test_every_channel_criterion_removes_channels(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 4 * 4, 5))
    x = torch.randn(4, 3, 8, 8)
    calibration = [(torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))) for _ in range(2)]
    res = pk.prune_structured(model, x, ratio=0.5, importance=name, calibration=calibration, seed=0)
    assert res.params_after < res.params_before
    assert model(x).shape == (4, 5)


@pytest.mark.parametrize("registry", [criteria.ELEMENTWISE, criteria.CHANNEL, zoo.MODELS, methods.METHODS])
def test_an_unknown_name_is_one_line_listing_the_choices(registry):
    with pytest.raises(pk.PruneError) as err:
        registry.get("no-such-thing")
    message = str(err.value)
    assert "\n" not in message and "'no-such-thing'" in message
    assert all(name in message for name in registry.names())


def _op_exists(name):
    import torchvision.ops
    from torch.nn import functional as F
    if name.startswith("linalg_"):  # torch.linalg.vector_norm is called linalg_vector_norm
        return hasattr(torch.linalg, name[len("linalg_"):])
    return any(hasattr(owner, name) for owner in (torch, torch.Tensor, F, torchvision.ops))


@pytest.mark.parametrize("name", [n for n in rules.OPS.names()])
def test_every_op_rule_names_a_real_torch_op(name):
    """A typo in the rule table would leave the real op unmapped (refused) with no error here."""
    assert _op_exists(name), name


@pytest.mark.parametrize("key", layers.LAYERS.names(), ids=str)
def test_every_layer_rule_is_for_a_module_class(key):
    if isinstance(key, str):  # another library's layer, by qualified name
        assert "." in key and key.split(".")[-1][0].isupper()
    else:
        assert issubclass(key, torch.nn.Module)
