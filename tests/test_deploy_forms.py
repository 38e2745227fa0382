"""ONNX export, int8 and prunekit bench: each deployable form computes what the pruned model
computes, and bench times them side by side."""
import json

import pytest
import torch

import prunekit as pk
from prunekit import zoo
from prunekit.cli import main
from prunekit.deploy import apply_kernels
from prunekit.deploy.bench import bench
from prunekit.deploy.int8 import quantize_int8
from prunekit.deploy.onnx import OnnxModule, export_onnx

X = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def pruned_lenet5():
    torch.manual_seed(0)
    model = zoo.build("lenet5").eval()
    pk.prune_structured(model, X[:1], ratio=0.5)
    pk.prune_magnitude(model, 0.8)
    return model


def test_onnx_export_of_a_pruned_model_matches_pytorch_at_any_batch(tmp_path):
    model = pruned_lenet5()
    result = export_onnx(model, X[:1], tmp_path / "m.onnx")
    assert result["max_abs_diff"] < 1e-4 and result["bytes"] > 0
    with torch.no_grad():
        torch.testing.assert_close(OnnxModule(tmp_path / "m.onnx")(X), model(X), rtol=1e-4, atol=1e-5)
    assert hasattr(model.features[0], "parametrizations")  # the model itself keeps its masks


def test_onnx_export_of_sparse_kernel_layers(tmp_path):
    model = zoo.build("lenet300").eval()
    pk.prune_magnitude(model, 0.9)
    expected = model(X)
    apply_kernels(model, {"net.1": "csr16", "net.3": "delta8"})
    export_onnx(model, X[:1], tmp_path / "s.onnx")
    torch.testing.assert_close(OnnxModule(tmp_path / "s.onnx")(X), expected, rtol=1e-4, atol=1e-5)


def test_int8_keeps_the_pruned_zeros_and_stays_close():
    model = zoo.build("lenet300").eval()
    pk.prune_magnitude(model, 0.9)
    q = quantize_int8(model)
    weight = q.net[1].weight().dequantize()
    assert torch.equal(weight == 0, model.net[1].weight == 0)
    with torch.no_grad():
        expected = model(X)
        assert float((q(X) - expected).abs().max()) < 0.05 * float(expected.abs().max())


def test_bench_times_every_form_side_by_side():
    model = zoo.build("lenet300").eval()
    baseline = zoo.build("lenet300").eval()
    pk.prune_magnitude(model, 0.9)
    rows = bench(model, (1, 28, 28), baseline=baseline, batches=(1, 8), threads=(1,), repeats=3)
    assert {r["form"] for r in rows} == {"dense", "pruned", "sparse", "onnx", "int8", "dense-int8"}
    assert len(rows) == 12
    for r in rows:
        assert r["latency"]["p10_s"] <= r["latency"]["median_s"] <= r["latency"]["p90_s"]
        assert r["throughput"] == pytest.approx(r["batch"] / r["latency"]["median_s"])
    dense = [r for r in rows if r["form"] == "dense"]
    assert all(r["speedup"] == 1.0 for r in dense)


def test_cli_bench_and_export(tmp_path, capsys):
    model = zoo.build("lenet300").eval()
    pk.prune_magnitude(model, 0.9)
    pk.save(model, tmp_path / "m.safetensors")
    assert main(["bench", str(tmp_path / "m.safetensors"), "--batches", "2",
                 "--threads", "1", "--forms", "pruned,sparse", "--repeats", "3",
                 "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["form"] for r in rows] == ["pruned", "sparse"]
    assert main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "c.safetensors"), "--int8"]) == 0
    assert "x of" in capsys.readouterr().out
    assert (tmp_path / "c.safetensors").stat().st_size < 0.1 * (tmp_path / "m.safetensors").stat().st_size
    assert main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.onnx"), "--format", "onnx"]) == 0
    assert main(["bench", str(tmp_path / "m.safetensors"), "--forms", "fast"]) == 2
