"""Recipes: every example in recipes/ validates and runs end to end (on small data), the
resolved recipe is saved and reloads the same, old versions migrate, and a wrong key or
value is one line naming the file, the line and the key, with nothing written."""
import json
from pathlib import Path

import pytest
import yaml

from prunekit import PruneError, recipes
from prunekit.cli import main
from prunekit.recipes.schema import CompareRecipe, LLMRecipe, PruneRecipe

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "recipes").glob("*.yaml"))
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "recipes"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    return tmp_path


def test_every_method_family_has_an_example():
    tasks = {p.stem: recipes.load(p) for p in EXAMPLES}
    assert {"magnitude", "structured", "hybrid", "gradual", "nm", "compare", "llm-wanda", "yolo"} <= set(tasks)
    assert isinstance(tasks["llm-wanda"], LLMRecipe) and isinstance(tasks["compare"], CompareRecipe)


def _small(path, out):
    """The example with its data and budgets cut to a test's size: digits (8x8, so LeNet-300-100
    for LeNet-5), one epoch each."""
    raw = yaml.safe_load(path.read_text())
    raw.update(out=str(out), data={"source": "digits"}, train={"epochs": 1})
    if raw.get("model", {}).get("source") == "lenet5":
        raw["model"] = {"source": "lenet300"}
    raw["finetune"] = {**raw.get("finetune", {}), "epochs": 1, "limit": 300}
    if "compare" in raw:
        raw["compare"] = {"methods": raw["compare"]["methods"][:2], "sparsities": [0.5]}
    small = out.parent / f"{path.stem}.yaml"
    small.write_text(yaml.safe_dump(raw))
    return small


@pytest.mark.parametrize("example", [p for p in EXAMPLES if p.stem not in ("llm-wanda", "yolo")], ids=lambda p: p.stem)
def test_example_recipe_runs_end_to_end(home, example, capsys):
    out = home / "out"
    assert main(["run", str(_small(example, out)), "--quiet"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["runs"] and all(r["compression_ratio"] > 1.2 for r in result["runs"])
    assert (out / "report.html").is_file()
    again = recipes.load(out / "recipe.yaml")  # the resolved recipe is a valid recipe, the same one
    assert again == recipes.load(_small(example, out))
    if isinstance(again, PruneRecipe):
        assert (out / "model.safetensors").is_file()
        assert result["runs"][0]["method"] == "+".join(s.method for s in again.prune)
        assert (out / "model.onnx").is_file() == again.export.onnx


@pytest.mark.parametrize("text, line, message", [
    ("data:\n  sorce: mnist\n", 5, "data.sorce: unknown key (did you mean source?)"),
    ("train: {epochs: two}\n", 4, "train.epochs: Input should be a valid integer"),
    ("finetune: {epochs: -1}\n", 4, "finetune.epochs: Input should be greater than or equal to 0"),
    ("export: {format: dense, int8: true}\n", 4, "export: int8 values are a compressed form"),
    ("prune_steps: []\n", 4, "prune_steps: unknown key (did you mean prune?)"),
])
def test_a_wrong_key_or_value_is_one_line_with_its_line_and_nothing_is_written(home, capsys, text, line, message):
    path = home / "r.yaml"
    path.write_text(f"version: 1\ntask: prune\nout: {home / 'out'}\n{text}"
                    + ("prune:\n  - {method: magnitude-global, sparsity: 0.5}\n" if "prune_steps" not in text else ""))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{path}:{line}: {message}" in err and len(err.splitlines()) == 1
    assert not (home / "out").exists()


def test_an_unknown_method_names_the_closest_and_the_step(home):
    path = home / "r.yaml"
    path.write_text(f"version: 1\ntask: prune\nout: {home}/o\nprune:\n  - {{method: magnitude-global}}\n"
                    "  - {method: strucured, sparsity: 0.5}\n")
    with pytest.raises(PruneError, match=r"r.yaml:6: prune.1.method: did you mean structured\?"):
        recipes.load(path)


def test_old_flat_recipes_migrate_and_errors_point_at_the_old_key():
    old = recipes.load(FIXTURES / "v0-compare.yaml")
    assert isinstance(old, CompareRecipe)
    assert (old.model.source, old.data.source, old.train.epochs, old.finetune.epochs) == ("lenet300", "digits", 3, 2)
    assert old.compare.sparsities == [0.5, 0.9] and old.evaluate.repeats == 10 and old.out == "runs/old-compare"
    with pytest.raises(PruneError, match=r"v0-bad.yaml:3: finetune_epochs: Input should be a valid integer"):
        recipes.load(FIXTURES / "v0-bad.yaml")
    with pytest.raises(PruneError, match="version 7 is not a recipe version"):
        recipes.load(FIXTURES / "v7.yaml")


def test_check_prints_the_resolved_recipe_and_runs_nothing(home, capsys):
    assert main(["run", str(ROOT / "recipes" / "hybrid.yaml"), "--check", "--out", str(home / "o")]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["out"] == str(home / "o") and printed["finetune"]["lr"] == 0.01
    assert not (home / "o").exists()


def test_yolo_recipe_slims_an_ultralytics_detector_that_still_runs_and_reloads(home, capsys):
    pytest.importorskip("ultralytics")
    import torch

    import prunekit as pk
    raw = yaml.safe_load((ROOT / "recipes" / "yolo.yaml").read_text())
    raw.update(out=str(home / "yolo"), input_shape=[3, 96, 96], evaluate={"latency_batch": 1, "repeats": 2})
    (home / "yolo.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(home / "yolo.yaml"), "--quiet"]) == 0
    result = json.loads((home / "yolo" / "result.json").read_text())
    assert result["slim"]["params"] < 0.75 * result["original"]["params"]
    assert result["ratios"]["theoretical_speedup"] > 1.2
    model = pk.load(home / "yolo" / "model.safetensors").eval()  # rebuilt from the file alone
    with torch.no_grad():
        boxes = model(torch.randn(1, 3, 96, 96))[0]
    assert boxes.shape[:2] == (1, 4 + 80)  # box and class scores, as before pruning
