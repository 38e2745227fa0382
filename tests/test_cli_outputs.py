"""What the CLI leaves on disk: options, data and model are checked before anything is made,
outputs are written under temporary names renamed when the run is complete, so a refused or
failed run leaves nothing behind and an older output as it was."""
import importlib
import json

import pytest
import yaml

import prunekit.cli.sensitivity
from prunekit import PruneError
from prunekit._utils.atomic import atomic_dir
from prunekit.cli import main


def _hidden(folder):
    """Temporary names the writes use (".NAME.xxxx.tmp", ".NAME.xxxx.old"), if any were left behind."""
    return sorted(p.name for p in folder.rglob(".*") if p.suffix in (".tmp", ".old"))


def _recipe(home, out, **changes):
    raw = {"version": 1, "task": "prune", "out": str(out), "data": {"source": "digits"},
           "model": {"source": "lenet300"}, "train": {"epochs": 1}, "finetune": {"epochs": 0},
           "prune": [{"method": "magnitude-global", "sparsity": 0.5}], "report": False}
    raw.update(changes)
    path = home / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"data": {"source": "no-such-data"}}, "unknown dataset"),
    ({"model": {"source": "resnet9000"}}, "unknown model"),
    ({"model": {"source": "lenet300", "weights": "missing.safetensors"}}, "no weights file"),
    ({"evaluate": {"threads": 0}}, "threads"),
])
def test_run_with_a_bad_recipe_leaves_no_out_folder(home, capsys, changes, message):
    out = home / "deep" / "er" / "out"
    assert main(["run", str(_recipe(home, out, **changes)), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (home / "deep").exists()  # not even the folders above it
    assert _hidden(home) == []


def test_a_slim_recipe_with_a_bad_model_leaves_no_out_folder(home, capsys):
    path = home / "slim.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "task": "slim", "out": str(home / "out"),
                                    "model": {"source": "nosuch"}, "input_shape": [1, 8, 8], "prune": {"ratio": 0.5}}))
    assert main(["run", str(path), "--quiet"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert not (home / "out").exists()


@pytest.mark.parametrize("error, code", [(PruneError("refused half-way"), 2), (RuntimeError("a bug half-way"), 1)])
def test_run_failing_after_writing_keeps_the_older_out_as_it_was(home, monkeypatch, capsys, error, code):
    out = home / "out"
    out.mkdir()
    (out / "result.json").write_text("the older run's")
    (out / "notes.txt").write_text("the user's")
    reached = []

    def half_way(config, quiet=False, plan=None):
        (config.out / "models").mkdir(parents=True)
        (config.out / "models" / "dense.safetensors").write_text("partial")
        reached.append(config.out)
        raise error
    monkeypatch.setattr(importlib.import_module("prunekit.recipes.run"), "run_compare", half_way)
    assert main(["run", str(_recipe(home, out)), "--quiet"]) == code
    assert reached and reached[0] != out  # it wrote, but elsewhere
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "result.json"]
    assert (out / "result.json").read_text() == "the older run's"
    assert _hidden(home) == []


def test_compare_failing_after_the_run_writes_neither_out_nor_json(home, monkeypatch, capsys):
    def broken(run_dir, **kwargs):
        assert (run_dir / "compare.json").is_file() and (run_dir / "models").is_dir()  # work was done
        raise PruneError("the report could not be written")
    monkeypatch.setattr("prunekit.report.write_report", broken)
    (home / "old.json").write_text("older")
    code = main(["compare", "--dataset", "digits", "--model", "lenet300", "--epochs", "1", "--finetune-epochs", "0",
                 "--methods", "magnitude-global", "--sparsities", "0.5", "--out", str(home / "run"),
                 "--json", str(home / "old.json"), "--quiet"])
    assert code == 2 and "the report could not be written" in capsys.readouterr().err
    assert not (home / "run").exists() and (home / "old.json").read_text() == "older"
    assert _hidden(home) == []


def test_compare_into_an_older_out_replaces_its_outputs_and_keeps_other_files(home, capsys):
    out = home / "run"
    (out / "models").mkdir(parents=True)
    (out / "models" / "stale.safetensors").write_text("from an older run")
    (out / "notes.txt").write_text("the user's")
    code = main(["compare", "--dataset", "digits", "--model", "lenet300", "--epochs", "1", "--finetune-epochs", "1",
                 "--methods", "magnitude-global", "--sparsities", "0.5", "--out", str(out), "--quiet"])
    assert code == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["config"]["out"] == str(out)  # where it is, not the temporary folder it was written in
    assert (out / "notes.txt").read_text() == "the user's"
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        "dense.dense.safetensors", "dense.safetensors", "magnitude-global-0.5.dense.safetensors",
        "magnitude-global-0.5.safetensors"]
    assert not (out / "checkpoints").exists()
    assert list((home / "home" / "resume").glob("*")) == []  # complete: nothing left to resume from
    assert _hidden(home) == []


def test_sensitivity_writes_its_plot_and_json_together_or_neither(home, monkeypatch, capsys):
    from prunekit import save, zoo
    src = save(zoo.build("lenet300", in_features=64), home / "m.safetensors")
    (home / "s.png").write_text("older plot")

    def broken(path, payload):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(prunekit.cli.sensitivity, "write_json", broken)
    code = main(["sensitivity", str(src), "--dataset", "digits", "--sparsities", "0.5", "--plot",
                 str(home / "s.png"), "--json", str(home / "s.json"), "--quiet"])
    assert code == 2 and "No space left" in capsys.readouterr().err
    assert (home / "s.png").read_text() == "older plot" and not (home / "s.json").exists()
    assert _hidden(home) == []


@pytest.mark.parametrize("output, message", [("a_folder", "is a folder"), ("a_file/out.safetensors", "is a file")])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(home, monkeypatch, capsys, output, message):
    (home / "a_folder").mkdir()
    (home / "a_file").write_text("")

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")
    monkeypatch.setattr("prunekit.cli.prune.load_model", never)
    assert main(["prune", "lenet300", str(home / output), "--sparsity", "0.5", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_atomic_dir_makes_a_new_folder_in_one_rename(tmp_path):
    with atomic_dir(tmp_path / "a" / "out") as staged:
        (staged / "x.txt").write_text("x")
        assert not (tmp_path / "a" / "out").exists()
    assert (tmp_path / "a" / "out" / "x.txt").read_text() == "x"
    assert _hidden(tmp_path) == []


def test_atomic_dir_failing_removes_what_it_made(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "a" / "b" / "out") as staged:
        (staged / "x.txt").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_a_file(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(PruneError, match="is a file"), atomic_dir(tmp_path / "out"):
        pass
    assert (tmp_path / "out").read_text() == "a file"


def test_an_llm_recipe_writes_its_folder_whole_naming_where_it_ends_up(home, capsys):
    from llm_helpers import english, tiny_llama, tokenizer
    tiny_llama().save_pretrained(home / "model")
    tokenizer().save_pretrained(home / "model")
    (home / "text.txt").write_text(english(("argparse", "json")))
    out = home / "pruned"
    raw = {"version": 1, "task": "llm", "out": str(out), "model": str(home / "model"),
           "calibration": {"text": str(home / "text.txt"), "n": 2, "seq_len": 32},
           "prune": {"method": "magnitude"}, "evaluate": {"text": str(home / "text.txt"), "max_tokens": 200}}
    (home / "llm.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(home / "llm.yaml"), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model", "perplexity-dense.json", "perplexity-pruned.json",
                                                     "prune.json", "recipe.yaml"]
    assert json.loads((out / "prune.json").read_text())["out"] == str(out / "model")
    assert json.loads((out / "perplexity-pruned.json").read_text())["model"] == str(out / "model")
    assert (out / "model" / "config.json").is_file() and _hidden(home) == []

    raw["model"] = str(home / "nothing-here")
    raw["out"] = str(home / "again")
    (home / "llm.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(home / "llm.yaml"), "--quiet"]) == 2
    assert not (home / "again").exists() and _hidden(home) == []
