"""The foundation's promise, end to end: `prunekit compare --quick` on real MNIST."""
import json

from prunekit.cli import main


def test_quick_compare_keeps_accuracy_at_10x_and_structured_is_faster(tmp_path):
    out = tmp_path / "quick.json"
    assert main(["compare", "--quick", "--out", str(tmp_path / "run"), "--json", str(out), "--quiet"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert {r["method"] for r in runs} == {"magnitude-global", "magnitude-layer", "structured", "hybrid"}
    high = [r for r in runs if r["method"] == "magnitude-global" and r["compression_ratio"] >= 10]
    assert high and all(r["accuracy_retention"] >= 0.99 for r in high)
    structured = max((r for r in runs if r["method"] == "structured"), key=lambda r: r["compression_ratio"])
    assert structured["speedup"] > 1
    hybrid = max((r for r in runs if r["method"] == "hybrid"), key=lambda r: r["compression_ratio"])
    assert hybrid["compression_ratio"] >= 10 and hybrid["speedup"] > 1
