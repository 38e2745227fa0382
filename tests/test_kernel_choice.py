"""How pk.to_sparse decides under noise (deploy/decide.py, deploy/choose.py), with injected
timings: noise cannot overturn the cost model, consistent timings can, a multi-thread kernel
must clearly beat its one-thread form, and a whole model slower than dense stays dense."""
import math

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.deploy import SparseLinear, build, choose, decide, to_sparse

pytestmark = pytest.mark.skipif(not build.available(), reason="no C compiler for prunekit's own kernels")


def rounds(ratios, dense=1.0):
    """Timings of 'dense' and one kernel whose per-round speedups over dense are `ratios`."""
    return [dense] * len(ratios), [dense / r for r in ratios]


def test_the_median_interval_is_two_order_statistics():
    assert decide.median_interval(range(1, 10)) == (5, 2, 8)  # 9 values: 2nd and 8th, 96 %
    assert decide.median_interval([3.0, 1.0, 2.0]) == (2.0, 0.0, math.inf)  # too few to bound at 95 %
    median, low, high = decide.median_interval(range(100))
    assert (low, high) == (39, 60)  # P(Binomial(100, 1/2) < 40) = 1.8 % <= 2.5 % < P(... < 41)


def test_noise_does_not_overturn_a_strong_prior():
    prior = {"dense": 1.0, "delta8": 10.0}
    # dense 3 % faster in one round, sparse far faster in the others: clearly pays
    dense, sparse = rounds([0.97, 9.0, 10.5, 11.0, 8.0, 12.0, 9.5, 10.0, 3.0])
    v = decide.decide(prior, {"dense": dense, "delta8": sparse}, 0.1, threads=1)
    assert v["kernel"] == "delta8" and not v["overturns"] and "agrees with the cost model" in v["reason"]
    # a median below 1 with rounds all over the place: too noisy to overturn a 10x prior
    dense, sparse = rounds([0.3, 0.5, 0.8, 0.95, 0.97, 1.2, 2.0, 5.0, 9.0])
    v = decide.decide(prior, {"dense": dense, "delta8": sparse}, 0.1, threads=1)
    assert v["kernel"] == "delta8" and not v["overturns"]
    assert v["reason"].startswith("cost model: 10.00x predicted") and "did not clearly overturn" in v["reason"]


def test_consistent_timings_overturn_the_prior_when_fresh_rounds_agree():
    prior = {"dense": 1.0, "delta8": 10.0}
    dense, sparse = rounds([0.78, 0.8, 0.79, 0.81, 0.8, 0.77, 0.82, 0.8, 0.79])  # clearly slower
    first = decide.decide(prior, {"dense": dense, "delta8": sparse}, 0.1, threads=1)
    assert first["kernel"] == "dense" and first["overturns"] and first["at_issue"] == "delta8"
    assert "clearly below 1.10x: overturns the cost model (10.00x)" in first["reason"]
    again = decide.decide(prior, {"dense": dense, "delta8": sparse}, 0.1, threads=1)
    assert decide.confirm(first, again)["kernel"] == "dense"
    assert decide.confirm(first, again)["reason"].endswith("confirmed in fresh rounds")
    # fresh rounds that are noisy again do not confirm it: the prior stands
    noisy = decide.decide(prior, dict(zip(("dense", "delta8"), rounds([0.5, 0.8, 1.0, 3.0, 9.0, 9.0, 9.0, 0.9, 2.0]))),
                          0.1, threads=1)
    final = decide.confirm(first, noisy)
    assert final["kernel"] == "delta8" and "the first rounds chose dense" in final["reason"]


def test_a_measurement_clearly_above_the_margin_overturns_a_dense_prior():
    prior = {"dense": 1.0, "torch-csr": 1.02}  # the cost model sees no gain
    dense, sparse = rounds([1.9, 2.0, 2.1, 2.0, 1.95, 2.05, 2.0, 1.98, 2.02])
    v = decide.decide(prior, {"dense": dense, "torch-csr": sparse}, 0.1, threads=2)
    assert v["kernel"] == "torch-csr" and v["overturns"] and v["at_issue"] == "torch-csr"
    assert "overturns the cost model (at most torch-csr 1.02x" in v["reason"]
    # and a noisy one does not: dense stays, as the cost model said
    dense, sparse = rounds([0.5, 0.9, 1.0, 1.05, 1.3, 1.6, 2.5, 3.0, 0.8])
    v = decide.decide(prior, {"dense": dense, "torch-csr": sparse}, 0.1, threads=2)
    assert v["kernel"] == "dense" and not v["overturns"] and v["reason"].startswith("cost model: at most torch-csr")


def test_a_multi_thread_kernel_must_clearly_beat_its_one_thread_form():
    prior = {"dense": 1.0, "delta8": 8.0, "delta8/1t": 8.0}
    dense = [1.0] * 9
    one = [0.1] * 9
    # two threads: faster in most rounds, several times slower when the other process holds a core
    stalls = [0.06, 0.3, 0.06, 0.06, 0.3, 0.06, 0.06, 0.3, 0.06]
    v = decide.decide(prior, {"dense": dense, "delta8": stalls, "delta8/1t": one}, 0.1, threads=2)
    assert v["kernel"] == "delta8/1t" and "one thread: delta8 on 2 was not clearly faster" in v["reason"]
    quiet = [0.055, 0.05, 0.052, 0.05, 0.051, 0.05, 0.053, 0.05, 0.05]  # twice as fast in every round
    v = decide.decide(prior, {"dense": dense, "delta8": quiet, "delta8/1t": one}, 0.1, threads=2)
    assert v["kernel"] == "delta8" and "one thread" not in v["reason"]


def test_the_cost_model_predicts_a_sparse_layer_at_batch_1_and_dense_at_a_large_batch():
    torch.manual_seed(0)
    layer = nn.Linear(512, 512)
    pk.prune_magnitude(layer, 0.9)
    matrix = layer.weight.detach()
    names = ["csr16", "delta8", "delta8/1t", "bitmask"]
    packed = choose._pack(matrix, names)
    one = decide.predicted_speedups(choose._loads(layer, torch.randn(1, 512), matrix, packed, names, 2))
    assert 5 < one["delta8"] < 10 and one["delta8"] == one["delta8/1t"]  # bound by bytes: 5 per kept weight
    assert one["delta8"] > one["bitmask"] > one["csr16"]  # 5, 4 + 1/8 / 0.1, 6 bytes per kept weight
    big = decide.predicted_speedups(choose._loads(layer, torch.randn(512, 512), matrix, packed, names, 2))
    assert big["delta8/1t"] < big["delta8"] and big["delta8"] < one["delta8"]  # compute-bound: threads count
    light = nn.Linear(512, 512)
    pk.prune_magnitude(light, 0.2)
    w = light.weight.detach()
    loads = choose._loads(light, torch.randn(256, 512), w, choose._pack(w, names), names, 2)
    assert max(decide.predicted_speedups(loads).values()) < 1.1  # 20 % sparse at batch 256: dense


def mlp(width=256):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)).eval()
    pk.prune_magnitude(model, 0.9)
    return pk.make_permanent(model)


def fake_kernels(speedups):
    """A _sample_kernels that reports every sparse spec `speedups[spec]` times faster than dense
    (1.3x where not named), 9 rounds, dense 1 ms."""
    def sample(module, x, names, packed, rounds, flush=None):
        return {"dense": [1e-3] * 9, **{k: [1e-3 / speedups.get(k, 1.3)] * 9 for k in names if k != "dense"}}
    return sample


KERNELS = ["dense", "torch-csr", "csr16", "csr16/1t", "delta8", "delta8/1t"]  # "/1t" whatever torch's threads


def faster_model(model, inputs, variants, rounds):
    return {"dense": [1.0] * 9, "sparse": [0.5] * 9}


def test_every_layer_reports_its_kernel_the_prior_and_why(monkeypatch):
    monkeypatch.setattr(choose, "_sample_kernels", fake_kernels({"delta8/1t": 4.0}))
    monkeypatch.setattr(choose, "_sample_models", faster_model)
    model = to_sparse(mlp(), torch.randn(1, 256), kernels=KERNELS)
    report = model.to_sparse_report
    assert report["threads"] == torch.get_num_threads() and report["model"]["rounds"] >= 9
    for name in ("0", "2"):
        row = report["layers"][name]
        assert row["kernel"] == "delta8/1t" and isinstance(model.get_submodule(name), SparseLinear)
        assert row["prior_kernel"] != "dense" and row["prior"]["dense"] == 1.0
        assert row["reason"].startswith("measured 4.00x [4.00-4.00] over dense, agrees with the cost model")
        assert row["speedup"]["delta8/1t"] == {"median": 4.0, "low": 4.0, "high": 4.0}
        assert row["seconds"]["dense"] == 1e-3 and row["spread"]["dense"] == [1e-3, 1e-3] and row["rounds"] == 9


def test_the_whole_model_stays_dense_when_it_is_not_faster(monkeypatch):
    monkeypatch.setattr(choose, "_sample_kernels", fake_kernels({"delta8/1t": 4.0}))
    monkeypatch.setattr(choose, "_sample_models", lambda model, inputs, variants, rounds: {
        "dense": [1.0] * 9, "sparse": [1.2, 1.1, 1.3, 0.9, 1.25, 1.2, 1.15, 1.3, 0.95]})  # 7 of 9 rounds slower
    model = mlp()
    originals = (model[0], model[2])
    report = {}
    to_sparse(model, torch.randn(1, 256), report=report, kernels=KERNELS)
    assert (model[0], model[2]) == originals  # the very layers it had
    assert not model.to_sparse_report["model"]["kept"]
    for row in report.values():
        assert row["kernel"] == "dense" and row["layer_kernel"] == "delta8/1t"
        assert row["reason"].endswith("the speed of dense, not faster: kept dense")
    # faster in most rounds: kept
    monkeypatch.setattr(choose, "_sample_models", lambda model, inputs, variants, rounds: {
        "dense": [1.0] * 9, "sparse": [0.5, 0.5, 1.2, 0.5, 0.5, 1.2, 0.5, 0.5, 0.5]})
    model = to_sparse(mlp(), torch.randn(1, 256), kernels=KERNELS)
    assert isinstance(model[0], SparseLinear) and model.to_sparse_report["model"]["kept"]
    assert model.to_sparse_report["model"]["reason"].startswith("whole model 2.00x")


def test_the_whole_model_check_times_both_forms_and_leaves_the_sparse_one_in():
    model = mlp()
    x = torch.randn(1, 256)
    expected = model(x)
    originals = {"0": model[0]}
    choose.apply_kernels(model, {"0": "csr16"})
    sparse = model[0]
    samples = choose._sample_models(model, x, {"dense": originals, "sparse": {"0": sparse}}, 3)
    assert len(samples["dense"]) == len(samples["sparse"]) >= 3 and model[0] is sparse
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_bench_rows_say_which_kernels_the_sparse_form_got_and_why(monkeypatch):
    from prunekit.deploy.bench import bench
    monkeypatch.setattr(choose, "_sample_kernels", fake_kernels({"delta8/1t": 4.0}))
    monkeypatch.setattr(choose, "_sample_models", faster_model)
    rows = bench(mlp(), (256,), batches=(1,), threads=(2,), forms=("pruned", "sparse"), repeats=3, warmup=1)
    sparse = next(r for r in rows if r["form"] == "sparse")
    assert set(sparse["choice"]["layers"]) == {"0", "2"} and sparse["choice"]["model"]["kept"]
    assert all(row["reason"].startswith("measured") for row in sparse["choice"]["layers"].values())
    assert "choice" not in next(r for r in rows if r["form"] == "pruned")


def test_a_failed_whole_model_check_leaves_the_model_as_it_was(monkeypatch):
    monkeypatch.setattr(choose, "_sample_kernels", fake_kernels({"delta8/1t": 4.0}))

    def broken(model, inputs, variants, rounds):
        raise RuntimeError("interrupted")
    monkeypatch.setattr(choose, "_sample_models", broken)
    model = mlp()
    originals = (model[0], model[2])
    with pytest.raises(RuntimeError, match="interrupted"):
        to_sparse(model, torch.randn(1, 256), kernels=KERNELS)
    assert (model[0], model[2]) == originals and not hasattr(model, "to_sparse_report")


@pytest.mark.parametrize("shape, kernel, pays", [((512, 512, 1, 14), 1, True),    # 1x1: measured 1.5x
                                                 ((256, 256, 3, 14), 3, False),   # 3x3: dense measured
                                                 ((64, 64, 3, 56), 3, False)])
def test_the_cost_model_counts_a_convolutions_copy_into_rows(shape, kernel, pays):
    cin, cout, k, hw = shape
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, padding=k // 2)
    pk.prune_magnitude(conv, 0.9)
    matrix = conv.weight.detach().reshape(cout, -1)
    names = ["csr16", "delta8", "bitmask"]
    loads = choose._loads(conv, torch.randn(1, cin, hw, hw), matrix, choose._pack(matrix, names), names, 2)
    assert (max(decide.predicted_speedups(loads).values()) > 1.1) == pays


def test_where_the_timings_cannot_tell_the_cost_model_ranks_the_kernels():
    prior = {"dense": 1.0, "csr16/1t": 1.33, "bitmask/1t": 1.88, "bitmask": 1.88}
    dense = [1.0] * 9
    samples = {"dense": dense,  # every kernel all over the place; csr16/1t the luckiest median
               "csr16/1t": rounds([0.6, 0.8, 1.0, 1.7, 1.66, 2.0, 9.0, 15.0, 0.7])[1],
               "bitmask/1t": rounds([0.5, 0.8, 0.9, 1.0, 1.2, 1.3, 4.0, 8.0, 0.6])[1],
               "bitmask": rounds([0.1, 0.2, 0.3, 0.9, 1.0, 1.1, 2.0, 9.0, 0.2])[1]}
    v = decide.decide(prior, samples, 0.1, threads=2)
    assert v["kernel"] == "bitmask/1t" and v["reason"].startswith("cost model: 1.88x predicted")
