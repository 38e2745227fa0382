import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit import zoo
from prunekit.serialization import load, save


def test_masked_zoo_model_round_trip_dense_and_compressed(tmp_path):
    model = zoo.build("lenet5")
    pk.prune_magnitude(model, 0.9)
    x = torch.randn(3, 1, 28, 28)
    expected = model(x)
    for fmt in ("dense", "compressed"):
        path = save(model, tmp_path / f"m-{fmt}.safetensors", format=fmt)
        loaded = load(path)
        assert torch.equal(loaded(x), expected)
        assert pk.sparsity(loaded)["global"]["sparsity"] == pytest.approx(0.9, abs=1e-6)
        # masks come back: fine-tuning the loaded model keeps the zeros
        assert hasattr(loaded.features[0], "parametrizations")
    dense = (tmp_path / "m-dense.safetensors").stat().st_size
    assert (tmp_path / "m-compressed.safetensors").stat().st_size < dense / 3


def test_structured_model_rebuilt_from_data(tmp_path):
    model = zoo.build("lenet5")
    x = torch.randn(2, 1, 28, 28)
    pk.prune_structured(model, x, ratio=0.6)
    path = save(model, tmp_path / "s.safetensors")
    loaded = load(path)
    assert loaded.features[0].out_channels == model.features[0].out_channels
    assert torch.equal(loaded(x), model(x))


def test_non_zoo_model_needs_fresh_instance(tmp_path):
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)).eval()
    model = build()
    pk.prune_structured(model, torch.randn(4, 8), ratio=0.5)
    pk.prune_magnitude(model, 0.5)
    path = save(model, tmp_path / "c.safetensors", format="compressed")
    with pytest.raises(pk.PruneError, match="model="):
        load(path)
    loaded = load(path, model=build())
    x = torch.randn(5, 8)
    assert torch.equal(loaded(x), model(x))
    assert loaded[1].num_features == 8


def test_bad_files_refused(tmp_path):
    with pytest.raises(pk.PruneError, match="no saved model"):
        load(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(pk.PruneError, match="cannot read"):
        load(corrupt)
    good = save(zoo.build("lenet300"), tmp_path / "g.safetensors")
    wrong = zoo.build("lenet5")
    before = copy.deepcopy(wrong.state_dict())
    with pytest.raises(pk.PruneError):
        load(good, model=wrong)
    assert all(torch.equal(before[k], v) for k, v in wrong.state_dict().items())
    with pytest.raises(pk.PruneError, match="format"):
        save(wrong, tmp_path / "x.safetensors", format="zip")


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save(zoo.build("lenet300"), path)
    original = path.read_bytes()
    import prunekit.serialization.io as io

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(io, "save_file", boom)
    with pytest.raises(RuntimeError):
        save(zoo.build("lenet300"), path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_compressed_round_trip_keeps_live_weights_that_are_exactly_zero(tmp_path):
    model = zoo.build("lenet300")
    pk.prune_magnitude(model, 0.9)
    layer = model.net[1]
    alive = pk.masks.get_mask(layer).nonzero()[:5]
    with torch.no_grad():  # what RigL / SET do: a grown connection starts at 0
        pk.masks.raw_tensor(layer)[alive[:, 0], alive[:, 1]] = 0
    loaded = load(save(model, tmp_path / "c.safetensors", format="compressed"))
    assert torch.equal(pk.masks.get_mask(loaded.net[1]), pk.masks.get_mask(layer))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_round_trip_keeps_its_dtype(tmp_path, dtype):
    model = zoo.build("lenet300").to(dtype)
    pk.prune_magnitude(model, 0.5)
    loaded = load(save(model, tmp_path / "h.safetensors", format="compressed"))
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    x = torch.randn(2, 1, 28, 28, dtype=dtype)
    assert torch.equal(loaded(x), model(x))


def test_a_bare_layer_is_stored_compressed(tmp_path):
    layer = nn.Linear(256, 256)
    pk.prune_magnitude(layer, 0.9)
    dense = save(layer, tmp_path / "d.safetensors").stat().st_size
    compressed = save(layer, tmp_path / "c.safetensors", format="compressed").stat().st_size
    assert compressed < dense / 3
    loaded = load(tmp_path / "c.safetensors", model=nn.Linear(256, 256))
    assert torch.equal(loaded.weight, layer.weight)


def test_a_damaged_plan_is_a_prune_error(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file
    path = save(zoo.build("lenet300"), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        plan, tensors = json.loads(f.metadata()["prunekit"]), {k: f.get_tensor(k) for k in f.keys()}
    del plan["shapes"]
    save_file(tensors, str(path), metadata={"prunekit": json.dumps(plan)})
    with pytest.raises(pk.PruneError, match="plan is damaged"):
        load(path)


def _saved_forms(path):
    from safetensors import safe_open
    import json
    with safe_open(str(path), "pt") as f:
        return {k: v["form"] for k, v in json.loads(f.metadata()["prunekit"])["forms"].items()}


@pytest.mark.parametrize("prune, form", [(lambda m: pk.prune_magnitude(m, 0.8, scope="layer"), "bitmask"),
                                         (lambda m: pk.prune_magnitude(m, 0.97, scope="layer"), "delta8"),
                                         (lambda m: pk.prune_nm(m, 1, 8), "nm"),
                                         (lambda m: pk.prune_nm(m, 2, 4), "bitmask")])
def test_compressed_checkpoints_choose_the_smallest_form_and_load_bit_exact(tmp_path, prune, form):
    model = zoo.build("lenet300")
    prune(model)
    pk.make_permanent(model)
    path = save(model, tmp_path / "c.safetensors", format="compressed")
    assert _saved_forms(path)["net.1.weight"] == form
    loaded = load(path).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded[name]), name


def test_compressed_sizes_at_90_percent_and_int8_values(tmp_path):
    model = nn.Sequential(nn.Linear(1024, 1024, bias=False), nn.Linear(1024, 1024, bias=False))
    pk.prune_magnitude(model, 0.9)
    pk.make_permanent(model)
    fresh = nn.Sequential(nn.Linear(1024, 1024, bias=False), nn.Linear(1024, 1024, bias=False))
    dense = save(model, tmp_path / "d.safetensors").stat().st_size
    packed = save(model, tmp_path / "c.safetensors", format="compressed").stat().st_size
    int8 = save(model, tmp_path / "q.safetensors", format="compressed", int8=True).stat().st_size
    assert packed <= 0.14 * dense and int8 <= 0.06 * dense
    loaded = load(tmp_path / "q.safetensors", model=fresh)
    w, q = model[0].weight, loaded[0].weight
    assert torch.equal(q != 0, w != 0)  # the same zeros
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    assert bool(((q - w).abs() <= scale / 2 + 1e-7).all())  # each value within half a step
    with pytest.raises(pk.PruneError, match="compressed"):
        save(model, tmp_path / "x.safetensors", int8=True)
