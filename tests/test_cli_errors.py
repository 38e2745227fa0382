"""Which errors the CLI shows as one line (the user's to fix) and which it shows whole (a bug)."""
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
