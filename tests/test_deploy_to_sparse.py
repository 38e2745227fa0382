"""pk.to_sparse: pruned Linear layers run the kernel measured fastest, dense where none is;
outputs stay those of the dense model; the result saves and loads with pk.save / pk.load."""
import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit import zoo
from prunekit.deploy import SparseLinear, apply_kernels, build, choose, plan_kernels, to_sparse
from prunekit.deploy.kernels import KERNELS

pytestmark = pytest.mark.skipif(not build.available(), reason="no C compiler for prunekit's own kernels")


def mlp(width=256, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10)).eval()


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k != "dense"])
def test_each_kernel_in_a_model_gives_the_dense_outputs(kernel):
    model = mlp()
    pk.prune_nm(model, 2, 4) if kernel == "nm" else pk.prune_magnitude(model, 0.9)
    x = torch.randn(2, 7, 256)  # leading dimensions are flattened and restored
    expected = model(x)
    apply_kernels(model, {"0": kernel, "2": kernel, "4": kernel})
    assert all(isinstance(model[i], SparseLinear) and model[i].kernel == kernel for i in (0, 2, 4))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_the_choice_follows_clear_timings_and_confirms_an_overturn(monkeypatch):
    model = mlp()
    pk.prune_magnitude(model, 0.9)
    names = {id(m): n for n, m in model.named_modules()}

    def steady(speedup):
        return {"dense": [1.0] * 9, "csr16": [1.0 / speedup] * 9}
    # per layer: the rounds of every kernel, then (where the prior is overturned) fresh rounds
    fake = {"0": [steady(2.0)],                      # clearly pays, as the cost model said
            "2": [steady(0.8), steady(0.8)],         # clearly slower twice: dense
            "4": [steady(0.8), {"dense": [1.0] * 9, "csr16": [1.0, 0.2, 3.0, 0.5, 0.4, 2.0, 1.0, 0.3, 5.0]}]}
    monkeypatch.setattr(choose, "_sample_kernels", lambda module, *args: fake[names[id(module)]].pop(0))
    plan = plan_kernels(model, torch.randn(1, 256), kernels=["csr16"])
    # "4": slower at first, then too noisy to say: the cost model's csr16 stands
    assert {name: row["kernel"] for name, row in plan.items()} == {"0": "csr16", "2": "dense", "4": "csr16"}
    assert plan["2"]["reason"].endswith("confirmed in fresh rounds") and "first rounds chose dense" in plan["4"]["reason"]
    assert not any(fake.values())  # every timing was asked for


def test_where_sparsity_does_not_pay_the_layer_stays_dense():
    model = mlp(1024)  # 20 % sparse at batch 256: dense GEMM is compute-bound and well blocked
    pk.prune_magnitude(model, 0.2, scope="layer")
    report = {}
    to_sparse(model, torch.randn(256, 1024), report=report)
    assert isinstance(model[0], nn.Linear) and report["0"]["kernel"] == "dense"
    # the cost model already says so; a timing could overturn it only by clearing the margin twice
    assert report["0"]["prior_kernel"] == "dense" and max(report["0"]["prior"].values()) < 1.1
    assert report["0"]["reason"].startswith("cost model: at most")


def test_a_heavily_pruned_model_gets_sparse_kernels_and_keeps_its_outputs():
    model = mlp(1024)
    pk.prune_magnitude(model, 0.95)
    x = torch.randn(1, 1024)
    expected = model(x)
    report = {}
    to_sparse(model, x, report=report)
    assert report["0"]["batch"] == 1 and isinstance(model[2], SparseLinear)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_tied_and_unpruned_layers_are_not_candidates():
    model = mlp()
    model[2].weight = model[0].weight  # shared: a sparse copy would double it
    pk.prune_magnitude(model, 0.5, include=[r"^4$"])
    assert list(choose.candidates(model)) == ["4"]


def test_sparse_model_saves_and_loads_with_its_kernels(tmp_path):
    model = zoo.build("lenet300")
    pk.prune_magnitude(model, 0.9)
    x = torch.randn(3, 1, 28, 28)
    expected = model(x)
    apply_kernels(model, {"net.1": "csr16", "net.3": "torch-csr", "net.5": "delta8/1t"})
    for fmt in ("dense", "compressed"):
        loaded = pk.load(pk.save(model, tmp_path / f"{fmt}.safetensors", format=fmt))
        assert [loaded.net[i].kernel for i in (1, 3, 5)] == ["csr16", "torch-csr", "delta8/1t"]
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(model.net[1], SparseLinear)  # saving left the model as it was


def test_sparse_layers_refuse_training():
    layer = SparseLinear.from_linear(nn.Linear(8, 4), "csr32")
    with pytest.raises(pk.PruneError, match="inference only"):
        layer(torch.randn(2, 8, requires_grad=True))
    for bad in ("fast", "dense/1t", "delta8/1t/1t"):
        with pytest.raises(pk.PruneError, match="unknown kernel"):
            plan_kernels(mlp(), torch.randn(1, 256), kernels=[bad])
    model = mlp()
    pk.prune_magnitude(model, 0.9)
    for bad in ({"margin": 1.5}, {"rounds": 0}):
        with pytest.raises(pk.PruneError, match="margin|rounds"):
            to_sparse(model, torch.randn(1, 256), **bad)
    assert all(type(m) is nn.Linear or not isinstance(m, SparseLinear) for m in model.modules())  # left intact


@pytest.mark.parametrize("kernel", ["csr16", "delta8", "torch-csr"])
@pytest.mark.parametrize("geometry", [dict(kernel_size=1), dict(kernel_size=3, padding=1),
                                      dict(kernel_size=(3, 2), stride=2, padding=(1, 0), dilation=(1, 2))])
def test_convolutions_on_sparse_kernels_give_the_dense_outputs(kernel, geometry, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(6, 10, **geometry), nn.ReLU(), nn.Conv2d(10, 4, 1, bias=False)).eval()
    pk.prune_magnitude(model, 0.8)
    x = torch.randn(2, 6, 9, 11)
    expected = model(x)
    apply_kernels(model, {"0": kernel, "2": kernel})
    assert type(model[0]).__name__ == "SparseConv2d"
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    loaded = pk.load(pk.save(model, tmp_path / "c.safetensors", format="compressed"),
                     model=nn.Sequential(nn.Conv2d(6, 10, **geometry), nn.ReLU(), nn.Conv2d(10, 4, 1, bias=False)))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)


def test_grouped_and_depthwise_convolutions_stay_dense():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3, padding="same"), nn.Conv2d(8, 4, 1))
    pk.prune_magnitude(model, 0.5)
    assert list(choose.candidates(model)) == ["2"]
