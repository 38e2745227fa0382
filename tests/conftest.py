"""Fixtures shared by the test files: a private $PRUNEKIT_HOME and the digits data
(helpers that are plain functions live in helpers.py)."""
import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private $PRUNEKIT_HOME under tmp_path (returned: tmp_path)."""
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture(scope="session")
def digits():
    """sklearn's 8x8 digits: real images, no download, split train/val/test."""
    from prunekit import data
    return data.load("digits")
