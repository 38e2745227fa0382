"""Which errors the CLI shows as one line (the user's to fix) and which it shows whole (a bug)."""
import json

import pytest

import prunekit.serialization
from prunekit.cli import main
from prunekit.errors import PruneError


def _export(tmp_path):
    return ["export", str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors"), "--quiet"]


@pytest.mark.parametrize("bug", [ValueError("shape mismatch in a kernel"), KeyError("conv1"),
                                 RuntimeError("mat1 and mat2 shapes cannot be multiplied")])
def test_a_bug_shows_its_traceback_and_exits_non_zero(tmp_path, monkeypatch, capsys, bug):
    def broken(*args, **kwargs):
        raise bug
    monkeypatch.setattr(prunekit.serialization, "load", broken)
    code = main(_export(tmp_path))
    err = capsys.readouterr().err
    assert code not in (0, 2)  # 2 means "your input"; this is not
    assert "Traceback (most recent call last)" in err and type(bug).__name__ in err
    assert "prunekit env" in err  # and it says how to report it


def test_a_prune_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise PruneError("no saved model at in.safetensors")
    monkeypatch.setattr(prunekit.serialization, "load", refuse)
    assert main(_export(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err == "prunekit: error: no saved model at in.safetensors"


def test_an_argument_error_is_exit_2_without_traceback(capsys):
    with pytest.raises(SystemExit) as info:
        main(["prune", "a", "b", "--sparsity", "lots"])
    assert info.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_a_path_the_user_named_is_one_line(tmp_path, monkeypatch, capsys):
    """An OSError about a named file (unwritable, a folder, missing) is the user's to fix."""
    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out.safetensors"))
    monkeypatch.setattr(prunekit.serialization, "load", unwritable)
    assert main(_export(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Permission denied" in err and "out.safetensors" in err


def test_an_os_error_without_a_path_is_a_bug(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise OSError("[Errno 12] Cannot allocate memory")
    monkeypatch.setattr(prunekit.serialization, "load", broken)
    assert main(_export(tmp_path)) not in (0, 2)
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("argv, prog, message", [
    (["prune", "a", "b", "--sparsity", "x"], "prunekit prune", "argument --sparsity: invalid float value: 'x'"),
    (["prune", "a", "b"], "prunekit prune", "the following arguments are required: --sparsity"),
    (["prune", "a", "b", "--sparsity", "0.5", "--bogus"], "prunekit prune", "unrecognized arguments: --bogus"),
    (["export", "a", "b", "--format", "zip"], "prunekit export", "argument --format: invalid choice: 'zip'"),
    (["pruen"], "prunekit", "argument command: invalid choice: 'pruen'"),
    ([], "prunekit", "the following arguments are required: command"),
    (["llm", "prune", "--model", "m"], "prunekit llm prune", "the following arguments are required: --out"),
    (["llm", "prune", "--model", "m", "--out", "o", "--wat"], "prunekit llm prune", "unrecognized arguments: --wat"),
    (["llm", "wat"], "prunekit llm", "argument llm_command: invalid choice: 'wat'"),
    (["data", "fetch"], "prunekit data fetch", "the following arguments are required: NAME"),
])
def test_a_usage_error_is_one_line_naming_the_help_and_exit_2(capsys, argv, prog, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err == f"{prog}: error: {message}" + err[len(prog) + 9 + len(message):]  # starts so
    assert err.endswith(f" (see {prog} --help)\n") and len(err.splitlines()) == 1 and "usage:" not in err


def test_help_still_prints_the_whole_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main(["llm", "prune", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith("usage: prunekit llm prune") and "--sparsity" in out


RESULT = {"baseline": {"model": "MLP", "dataset": "digits", "accuracy": 0.9, "latency_ms": 1.0, "file_bytes": 1000,
                       "params": 100, "energy": {"method": "macs"}},
          "runs": [{"method": "magnitude-global", "target_sparsity": 0.5, "compression_ratio": 2.0, "accuracy": 0.89,
                    "speedup": 1.1, "size_bytes": 600, "memory_reduction": None}]}


def _with(path, **changes):
    """RESULT with dotted keys changed ("runs.0.accuracy": value); a value of ... removes the key."""
    result = json.loads(json.dumps(RESULT))
    for key, value in changes.items():
        *parents, last = key.split(".")
        here = result
        for part in parents:
            here = here[int(part)] if part.isdigit() else here[part]
        if value is ...:
            del here[last]
        else:
            here[last] = value
    path.write_text(json.dumps(result))


def test_report_reads_a_well_formed_result(tmp_path, capsys):
    _with(tmp_path / "result.json")
    assert main(["report", str(tmp_path), "--no-sensitivity", "--quiet"]) == 0
    assert (tmp_path / "report.html").stat().st_size > 1000


@pytest.mark.parametrize("changes, message", [
    ({"baseline.model": ...}, "baseline has no model"),
    ({"baseline.energy": {}}, "baseline.energy has no method"),
    ({"runs.0.accuracy": "high"}, "runs[0].accuracy is 'high', not a finite number"),
    ({"runs.0.accuracy": float("nan")}, "runs[0].accuracy is nan, not a finite number"),
    ({"runs.0.speedup": None}, "runs[0].speedup is None, not a finite number"),
    ({"runs.0.compression_ratio": 0}, "runs[0].compression_ratio is 0, not > 0"),
    ({"runs.0.target_sparsity": 1.0}, "runs[0].target_sparsity is 1.0, not in [0, 1)"),
    ({"runs.0.size_bytes": "600"}, "runs[0].size_bytes is '600', not a number"),
    ({"runs": {"a": 1}}, "runs is a dict, not a list"),
    ({"environment": ["torch"]}, "environment is a list, not a mapping"),
])
def test_report_on_a_foreign_result_is_one_line_naming_the_file_and_writes_nothing(tmp_path, capsys, changes, message):
    _with(tmp_path / "result.json", **changes)
    assert main(["report", str(tmp_path), "--no-sensitivity", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"prunekit: error: {tmp_path / 'result.json'} is not a prunekit result: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


@pytest.mark.parametrize("text, message", [("{", "is not a complete JSON result"),
                                           ("[1, 2]", "is not a prunekit result: it has no baseline and runs")])
def test_report_on_a_malformed_result_is_one_line(tmp_path, capsys, text, message):
    (tmp_path / "compare.json").write_text(text)
    assert main(["report", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{tmp_path / 'compare.json'} {message}" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("text", ['{"dense": 0.9}', '{"dense": 0.9, "layers": {"fc": {"0.5": "x"}}}', "[]", "{"])
def test_report_with_a_malformed_sensitivity_file_is_one_line(tmp_path, capsys, text):
    _with(tmp_path / "result.json")
    (tmp_path / "sensitivity.json").write_text(text)
    assert main(["report", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path / "sensitivity.json") in err and "sensitivity result" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "report.html").exists()
