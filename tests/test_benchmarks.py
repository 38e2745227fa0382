"""Benchmarks fail loudly: a missing input or a failed row is a non-zero exit naming it, never
an empty or short table written as if complete."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _llm_table():
    spec = importlib.util.spec_from_file_location("llm_table", ROOT / "benchmarks" / "llm_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_llm_table_without_its_text_fetched_exits_naming_it(home, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["llm_table.py", "--rows", "dense", "--json", str(home / "t.json")])
    with pytest.raises(SystemExit) as info:
        _llm_table().main()
    assert "python-docs" in str(info.value.code) and "prunekit data fetch python-docs" in str(info.value.code)
    assert not (home / "t.json").exists()


def test_llm_table_with_a_failing_row_exits_naming_the_row_and_why(home, monkeypatch):
    docs = home / "home" / "text" / "python-docs"  # present, so the run gets as far as its rows
    docs.mkdir(parents=True)
    (docs / "tutorial.txt").write_text("text")
    (home / "empty").mkdir()  # a model folder that holds no model: the row's own load refuses it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", ["llm_table.py", "--model", str(home / "empty"), "--rows", "dense",
                                      "--json", str(home / "t.json")])
    with pytest.raises(SystemExit) as info:
        _llm_table().main()
    message = str(info.value.code)
    assert "1 of 1 rows failed" in message and "\ndense: " in message and "config.json" in message
    assert not (home / "t.json").exists()
