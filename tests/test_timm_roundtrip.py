"""Failure classes found by benchmarks/timm_roundtrip.py (prune_structured -> pk.save ->
pk.load into a fresh timm model -> same outputs), each on the smallest timm config that
showed it, and the mechanism on a plain module where one is enough."""
import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit import surgery

timm = pytest.importorskip("timm")


def _build(name, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


def _roundtrip(tmp_path, name, size, **kwargs):
    """Prune a timm model, save it, load it into a fresh one: both give the same outputs."""
    model = _build(name, **kwargs)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    res = pk.prune_structured(model, (x,), ratio=0.3)
    assert res.params_after < res.params_before
    path = pk.save(model, tmp_path / "pruned.safetensors")
    loaded = pk.load(path, model=_build(name, **kwargs))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


# -- one module under several names (timm CoaT: mlp2 = mlp3 = mlp4, a cpe shared by blocks) --

class Aliased(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = self.b = self.c = nn.Linear(8, 8)


def test_surgery_cuts_a_module_reached_under_several_names_once():
    """pk.load's plan names every alias: slicing the module once per name cut it twice, and
    a tensor freed by the first cut could hand its id to a new one taken for it."""
    model = Aliased()
    weight, bias = model.a.weight.detach().clone(), model.a.bias.detach().clone()
    keep = torch.tensor([1, 3, 5, 7])
    plan = surgery.Cuts({(n, t): {0: keep} for n in "abc" for t in ("weight", "bias")}, {})
    surgery.apply(model, plan)
    assert model.a is model.b is model.c
    assert torch.equal(model.a.weight, weight[keep]) and torch.equal(model.a.bias, bias[keep])


@pytest.mark.parametrize("name, kwargs", [
    ("coat_lite_tiny", {"serial_depths": (1, 1, 1, 1)}),           # shared cpe
    ("coat_tiny", {"serial_depths": (1, 1, 1, 1), "parallel_depth": 1}),  # shared cpe and mlp2/3/4
])
def test_coat_round_trip(tmp_path, name, kwargs):
    _roundtrip(tmp_path, name, 32, img_size=32, **kwargs)
