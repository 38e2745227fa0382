"""prunekit.measure and prunekit.serialization.sparse_format, checked against numbers worked out by hand."""
import math

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn
from torch.nn.utils import parametrize

from helpers import make_mlp
from prunekit.errors import PruneError
from prunekit.measure import compare, measure, memory, prunable_modules, time_models
from prunekit.measure import energy as energy_mod
from prunekit.serialization import sparse_format


@pytest.fixture(autouse=True)
def no_rapl(monkeypatch, tmp_path):
    """Point RAPL at an empty folder so the estimate path runs on every machine."""
    monkeypatch.setattr(energy_mod, "RAPL_GLOB", str(tmp_path / "none" / "intel-rapl:*"))


class MaskParam(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 5))


def mlp(width, depth=3):
    return make_mlp(*[width] * (depth + 1), relu=False)


def no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 3, 3, 3), (1, 17, 2), ()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool])
def test_pack_round_trip_exact(shape, dtype):
    g = torch.Generator().manual_seed(1)
    t = (torch.randn(shape, generator=g) * 10).to(dtype)
    t = t * (torch.rand(shape, generator=g) > 0.6).to(dtype)
    packed = sparse_format.pack(t)
    expected_bits = np.packbits((t.flatten() != 0).numpy())
    assert np.array_equal(packed["bitmask"].numpy(), expected_bits)
    assert packed["values"].dtype == dtype and packed["shape"].dtype == torch.int64
    back = sparse_format.unpack(packed)
    assert back.dtype == dtype and back.shape == t.shape and torch.equal(back, t)
    assert sparse_format.packed_nbytes(t) == sum(v.numel() * v.element_size() for v in packed.values())


@pytest.mark.parametrize("t", [torch.zeros(0), torch.zeros(0, 3), torch.zeros(5, 9), torch.zeros(8)])
def test_pack_empty_and_all_zero(t):
    packed = sparse_format.pack(t)
    assert packed["values"].numel() == 0
    assert packed["bitmask"].numel() == math.ceil(t.numel() / 8)
    assert torch.equal(sparse_format.unpack(packed), t) and sparse_format.unpack(packed).shape == t.shape
    assert sparse_format.packed_nbytes(t) == sum(v.numel() * v.element_size() for v in packed.values())


def test_pack_across_chunks_and_smaller_when_sparse(monkeypatch):
    monkeypatch.setattr(sparse_format, "_CHUNK", 16)  # force several chunks, odd tail
    t = torch.randn(13, 7) * (torch.rand(13, 7) > 0.5)
    packed = sparse_format.pack(t)
    assert np.array_equal(packed["bitmask"].numpy(), np.packbits((t.flatten() != 0).numpy()))
    assert torch.equal(sparse_format.unpack(packed), t)
    t = torch.randn(256, 256) * (torch.rand(256, 256) > 0.9)  # 90 % sparse: packed far smaller
    assert sparse_format.packed_nbytes(t) < 0.25 * t.numel() * t.element_size()


def test_unpack_rejects_inconsistent_input():
    packed = sparse_format.pack(torch.tensor([1.0, 0.0, 2.0]))
    with pytest.raises(PruneError):
        sparse_format.unpack({**packed, "values": torch.tensor([1.0])})
    with pytest.raises(PruneError):
        sparse_format.unpack({"values": packed["values"]})


def test_counts_exact_with_zeroed_entries():
    model = small_model()
    with torch.no_grad():
        model[0].weight.view(-1)[:10] = 0   # conv weight: 6*2*3*3 = 108
        model[3].weight[0, :50] = 0         # linear weight: 5*216 = 1080
        model[3].bias[0] = 0
    m = measure(model, torch.randn(1, 4, 8, 8), latency=False)
    assert m["prunable_params"] == 108 + 1080 and m["params"] == 108 + 6 + 1080 + 5
    assert m["nonzeros"] == 108 + 1080 - 60
    assert m["params_nonzero"] == m["params"] - 61
    assert m["sparsity"] == pytest.approx(60 / 1188)
    assert [n for n, _ in prunable_modules(model)] == ["0", "3"]


def test_counts_same_through_parametrize_mask():
    plain, masked = small_model(), small_model()
    mask = torch.ones_like(plain[3].weight)
    mask[:, ::2] = 0
    with torch.no_grad():
        plain[3].weight.mul_(mask)
    parametrize.register_parametrization(masked[3], "weight", MaskParam(mask))
    x = torch.randn(2, 4, 8, 8)
    a, b = measure(plain, x, latency=False), measure(masked, x, latency=False)
    for key in ("params", "prunable_params", "nonzeros", "params_nonzero", "sparsity", "effective_macs",
                "size_bytes", "size_bytes_compressed"):
        assert a[key] == b[key], key
    assert b["nonzeros"] == 108 + 540


def test_size_bytes_is_effective_state_with_plain_names():
    model = small_model()
    parametrize.register_parametrization(model[3], "weight", MaskParam(torch.zeros_like(model[3].weight)))
    m = measure(model, torch.randn(1, 4, 8, 8), latency=False)
    state = {f"{i}.{t}": getattr(model[i], t).detach() for i in (0, 3) for t in ("weight", "bias")}
    assert m["size_bytes"] == len(safetensors.torch.save(state))
    # the all-zero linear weight packs to a bitmask only: 1080*4 bytes -> 135 + values 0 + shape 16
    assert m["size_bytes"] - m["size_bytes_compressed"] > 1080 * 4 - 135 - 200


def test_compressed_size_shrinks_at_high_sparsity():
    model = mlp(128, 2)
    with torch.no_grad():
        for layer in model:
            layer.weight[torch.rand_like(layer.weight) < 0.9] = 0
    m = measure(model, torch.randn(1, 128), latency=False)
    assert m["size_bytes_compressed"] < 0.3 * m["size_bytes"]


def test_macs_by_hand_and_effective_halves():
    model, x = small_model(), torch.randn(3, 4, 8, 8)
    conv = 3 * 6 * 6 * 6 * (4 // 2) * 3 * 3   # out numel * in/groups * k*k
    linear = 3 * 216 * 5                       # batch * in * out
    m = measure(model, x, latency=False)
    assert m["macs"] == m["effective_macs"] == conv + linear and m["theoretical_speedup_vs_dense"] == 1.0
    with torch.no_grad():
        model[3].weight[:, ::2] = 0
    m = measure(model, x, latency=False)
    assert m["macs"] == conv + linear and m["effective_macs"] == pytest.approx(conv + linear / 2)
    assert m["theoretical_speedup_vs_dense"] == pytest.approx((conv + linear) / (conv + linear / 2))


def test_macs_conv_transpose_and_tuple_inputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose1d(2, 4, 3, stride=2)
            self.fc = nn.Linear(5, 3)

        def forward(self, a, b):
            return self.up(a).sum() + self.fc(b).sum()

    m = measure(Two(), (torch.randn(1, 2, 10), torch.randn(7, 5)), latency=False)
    assert m["macs"] == 1 * 2 * 10 * 4 * 3 + 7 * 5 * 3


def test_time_models_interleaved_and_threads_restored():
    before = torch.get_num_threads()
    small, big = mlp(256, 1), mlp(256).train()
    out = time_models({"small": small, "big": big}, torch.randn(8, 256), repeats=5, warmup=1, threads=1)
    assert set(out) == {"small", "big"}
    for lat in out.values():
        assert lat["median_s"] > 0 and lat["repeats"] == 5 and lat["threads"] == 1 and lat["batch_size"] == 8
        assert lat["min_s"] <= lat["p25_s"] <= lat["median_s"] <= lat["p75_s"]
    assert torch.get_num_threads() == before and big.training
    with pytest.raises(PruneError):
        time_models({"a": small}, torch.randn(2, 256), repeats=0)


def test_time_models_rotates_order_each_round():
    calls, models = [], {name: nn.Identity() for name in "abc"}
    for name, model in models.items():
        model.register_forward_pre_hook(lambda module, args, name=name: calls.append(name))
    time_models(models, torch.zeros(1), repeats=3, warmup=0)
    assert calls == list("abc" "bca" "cab")


def test_peak_memory_grows_with_activations_and_covers_params():
    model, param_bytes = mlp(512), 3 * (512 * 512 + 512) * 4
    one = measure(model, torch.randn(1, 512), latency=False)["peak_memory"]
    many = measure(model, torch.randn(64, 512), latency=False)["peak_memory"]
    assert one >= param_bytes
    # 64 samples: input + at least two live 64x512 float activations more than batch 1
    assert many - one >= 2 * 63 * 512 * 4
    # freed activations are subtracted: 6 layers keep only input + ~2 activations live, not 7
    extra = measure(mlp(512, 6), torch.randn(64, 512), latency=False)["peak_memory"] - 2 * param_bytes
    assert 2 * 64 * 512 * 4 <= extra <= 4 * 64 * 512 * 4
    with memory._LiveBytes([]) as mode:  # the count drops when a tensor dies
        a, b = torch.ones(1000), torch.ones(1000)
        del a
    assert mode.peak == 8000 and mode.current == 4000 and b.numel() == 1000


def test_energy_estimate_drops_when_weights_zeroed():
    model, x = mlp(256), torch.randn(4, 256)
    dense = measure(model, x, latency=False)["energy"]
    with torch.no_grad():
        for layer in model:
            layer.weight[torch.rand_like(layer.weight) < 0.9] = 0
    sparse = measure(model, x, latency=False)["energy"]
    assert dense["method"] == sparse["method"] == "estimate"
    assert "Horowitz" in dense["note"] and "estimate" in dense["note"]
    assert 0 < sparse["joules_per_inference"] < 0.5 * dense["joules_per_inference"]
    # dense by hand: MACs*4.6 pJ + weights 640 pJ each + inputs 5 pJ each, per sample of 4
    pj = 3 * (4 * 256 * 256 * 4.6 + 256 * 256 * 640 + 4 * 256 * 5)
    assert dense["joules_per_inference"] == pytest.approx(pj * 1e-12 / 4)


def test_rapl_read_with_wraparound(monkeypatch, tmp_path):
    zone = tmp_path / "intel-rapl:0"
    for folder in (zone, tmp_path / "intel-rapl:0:0"):  # the sub-zone :0:0 must be ignored
        folder.mkdir()
    (zone / "max_energy_range_uj").write_text("1000000\n")
    (zone / "energy_uj").write_text("999000\n")
    monkeypatch.setattr(energy_mod, "RAPL_GLOB", str(tmp_path / "intel-rapl:*"))
    zones = energy_mod._rapl_zones()
    assert [p for p, _ in zones] == [str(zone)]
    assert energy_mod._joules(zones, [999000], [2000]) == pytest.approx(3000e-6)
    rapl = measure(mlp(4), torch.randn(1, 4), latency=False)["energy"]  # counter frozen: 0 J
    assert rapl["method"] == "rapl" and rapl["joules_per_inference"] == 0


def test_accuracy_known_answer_and_training_flag_restored():
    model = nn.Sequential(nn.Linear(2, 3)).train()
    with torch.no_grad():  # fixed logits (0, 5, 1): always predicts class 1
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0.0, 5.0, 1.0]))
    data = [(torch.randn(4, 2), torch.tensor([1, 1, 0, 2])), (torch.randn(2, 2), torch.tensor([1, 1]))]
    m = measure(model, torch.randn(1, 2), data=data, latency=False)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert model.training and model[0].training
    assert "accuracy" not in measure(model, torch.randn(1, 2), latency=False)


def test_compare_ratios_and_zero_division():
    base = {"prunable_params": 1000, "nonzeros": 1000, "accuracy": 0.9, "latency": {"median_s": 0.02},
            "macs": 600, "effective_macs": 600, "peak_memory": 4000, "size_bytes": 8000,
            "size_bytes_compressed": 8000, "energy": {"joules_per_inference": 2.0, "method": "estimate"}}
    pruned = {"prunable_params": 1000, "nonzeros": 100, "accuracy": 0.81, "latency": {"median_s": 0.01},
              "macs": 600, "effective_macs": 200, "peak_memory": 1000, "size_bytes": 8000,
              "size_bytes_compressed": 2000, "energy": {"joules_per_inference": 0.5, "method": "estimate"}}
    r = compare(base, pruned)
    assert r["compression_ratio"] == 10 and r["accuracy_retention"] == pytest.approx(0.9)
    assert r["speedup"] == 2 and r["theoretical_speedup"] == 3 and r["memory_reduction"] == 4
    assert r["size_reduction"] == 4 and r["energy_efficiency"] == 4 and r["energy_method"] == "estimate"
    empty = compare(base, {**pruned, "nonzeros": 0, "effective_macs": 0, "accuracy": None, "latency": None})
    assert empty["compression_ratio"] == float("inf") and empty["theoretical_speedup"] == float("inf")
    assert empty["accuracy_retention"] is None and empty["speedup"] is None
    assert compare({**base, "accuracy": 0}, pruned)["accuracy_retention"] == float("inf")


class Broken(nn.Module):
    """Raises on forward call number `fail_at`: each phase of measure gets its turn to fail."""

    def __init__(self, fail_at):
        super().__init__()
        self.fc, self.calls, self.fail_at = nn.Linear(4, 4), 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom\nsecond line")
        return self.fc(x)


def test_measure_leaves_model_unchanged():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).train()
    model[1].eval()  # mixed flags must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    measure(model, torch.randn(2, 3, 8, 8), repeats=2, warmup=1, threads=1)
    assert model.training and not model[1].training and model[3].training
    assert no_hooks(model) and torch.get_num_threads() == threads
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats untouched


@pytest.mark.parametrize("fail_at", [1, 3, 5])  # MACs pass, timing loop, peak-memory pass
def test_measure_failing_forward_is_one_line_and_clean(fail_at):
    from torch.utils._python_dispatch import _get_current_dispatch_mode
    model = Broken(fail_at).train()
    threads = torch.get_num_threads()
    with pytest.raises(PruneError) as err:
        measure(model, torch.randn(2, 4), repeats=2, warmup=1, threads=1)
    assert "\n" not in str(err.value) and "boom" in str(err.value) and model.calls == fail_at
    assert model.training and no_hooks(model) and torch.get_num_threads() == threads
    assert _get_current_dispatch_mode() is None


@pytest.mark.parametrize("bad", [[torch.randn(2)], "x", (), (torch.randn(2), 3)])
def test_measure_rejects_bad_inputs(bad):
    with pytest.raises(PruneError):
        measure(mlp(2), bad, latency=False)
    with pytest.raises(PruneError):
        measure(mlp(2), torch.randn(1, 2), repeats=0)


def test_peak_memory_counts_an_input_view_by_its_own_bytes():
    model = nn.Sequential(nn.Linear(10, 10))
    big = torch.randn(100_000, 10)
    from_view = measure(model, big[:4], latency=False)["peak_memory"]
    from_copy = measure(model, big[:4].clone(), latency=False)["peak_memory"]
    assert from_view == from_copy
