"""Review findings on structured pruning (issue 14, item 6): the pruned model is checked to the
end of its forward; soft pruning removes exactly the channels it zeroed; structured/ is used
through its public names only."""
import ast
import copy
import pathlib

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.training.schedules import Schedule
from prunekit.training.soft import SoftChannelPruner

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "prunekit"


class _WidthCheckedAtEnd(nn.Module):
    """Its last step, after every traced call, needs a hard-coded width: pruning `checked`
    ("conv1" or "conv2") breaks the forward only there. `data_dependent` reads a value
    (.item()), so the trace and the check run on real tensors instead of the meta device."""

    def __init__(self, checked="conv2", data_dependent=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)
        self.checked, self.data_dependent = checked, data_dependent

    def forward(self, x):
        h1 = torch.relu(self.conv1(x))
        h2 = torch.relu(self.conv2(h1))
        out = self.fc(h2.mean((2, 3)))
        if self.data_dependent and float(out.sum()) != float(out.sum()):
            return out  # never: only there to need a real value
        width = {"conv1": (h1, 8), "conv2": (h2, 16)}[self.checked]
        if width[0].shape[1] != width[1]:
            raise RuntimeError(f"{self.checked} must keep {width[1]} channels")
        return out


@pytest.mark.parametrize("data_dependent", [False, True])
@pytest.mark.parametrize("checked", ["conv1", "conv2"])
def test_a_forward_that_fails_after_its_last_traced_call_fails_the_check(checked, data_dependent):
    model, x = _WidthCheckedAtEnd(checked, data_dependent), torch.randn(2, 3, 8, 8)
    before = copy.deepcopy(model.state_dict())
    try:
        result = pk.prune_structured(model, (x,), ratio=0.5)
    except pk.PruneError as err:  # the other honest outcome: a clear error, the model as it was
        assert "\n" not in str(err)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        return
    model(x)  # the pruned model runs to the end
    assert getattr(model, checked).out_channels == {"conv1": 8, "conv2": 16}[checked]
    assert result.kept_fixed  # and says which channels it had to keep
    if checked == "conv2":  # only what the failure needs is kept: conv1 still loses half
        assert model.conv1.out_channels == 4 and result.removed["conv1"]["out"]


def test_the_check_fails_after_the_last_traced_call_in_steps_too():
    model, x = _WidthCheckedAtEnd("conv2"), torch.randn(2, 3, 8, 8)
    pk.prune_structured(model, (x,), ratio=0.5, steps=2)
    model(x)
    assert model.conv2.out_channels == 16 and model.conv1.out_channels == 4


def _cnn_with_a_dead_channel(dead=0):
    """Channel `dead` of the first conv is dead from the start (zero filter and bias), but the
    next conv reads it with large weights, so its l2 score is high and soft pruning keeps it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        model[0].weight[dead] = 0
        model[0].bias[dead] = 0
        model[3].weight[:, dead] *= 50
    return model.eval()


def _zero_filters(model):
    """{conv name: indices of its filters that are all zero (masks applied)}."""
    return {name: (m.weight.flatten(1) == 0).all(1).nonzero().flatten().tolist()
            for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.mark.parametrize("mode", ["mask", "zero"])
def test_soft_finish_removes_exactly_the_zeroed_channels_not_a_dead_one(mode):
    model, x = _cnn_with_a_dead_channel(dead=0), torch.randn(2, 3, 8, 8)
    pruner = SoftChannelPruner(model, (x,), Schedule(final=0.5, begin=1, end=1, kind="constant"), mode=mode)
    pruner.step()
    zeroed = _zero_filters(model)
    assert 0 in zeroed["0"] and len(zeroed["0"]) == 5  # the dead one and the four soft pruning chose
    zeroed["0"].remove(0)
    with torch.no_grad():
        expected = copy.deepcopy(model)
        if mode == "zero":  # finish zeroes BatchNorm too; compare with that model
            for i, name in ((0, "0"), (3, "3")):
                expected[i + 1].weight[zeroed[name]] = 0
                expected[i + 1].bias[zeroed[name]] = 0
        out = expected(x)
    result = pruner.finish()
    assert {name: result.removed[name]["out"] for name in zeroed} == zeroed
    assert model[0].out_channels == 4 and model[3].out_channels == 4
    with torch.no_grad():
        torch.testing.assert_close(model(x), out, rtol=1e-5, atol=1e-5)


def _imports(path):
    """(module, name) for every `from prunekit... import name` in a file."""
    tree = ast.parse(path.read_text())
    return [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("prunekit") for alias in node.names]


def test_no_private_helper_of_structured_is_imported_from_outside():
    for path in SRC.rglob("*.py"):
        if "structured" in path.relative_to(SRC).parts[:1]:
            continue
        for module, name in _imports(path):
            if module.startswith("prunekit.structured"):
                assert not name.startswith("_"), f"{path.name} imports {module}.{name}"


def test_soft_and_hybrid_use_only_the_public_names_of_structured():
    from prunekit import structured
    for path in (SRC / "training" / "soft.py", SRC / "search" / "hybrid.py"):
        for module, name in _imports(path):
            if module.startswith("prunekit.structured"):
                assert module == "prunekit.structured" and name in structured.__all__, \
                    f"{path.name} imports {module}.{name}"


def test_structured_prune_module_and_its_functions_stay_small():
    source = (SRC / "structured" / "prune.py").read_text()
    assert len(source.splitlines()) <= 400
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef):
            assert node.end_lineno - node.lineno + 1 <= 60, f"{node.name} is too long"
