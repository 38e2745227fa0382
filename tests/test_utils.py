"""The shared helpers in prunekit._utils: argument checks, the registry, example inputs."""
import math

import pytest
import torch

from prunekit._utils.inputs import as_inputs
from prunekit._utils.registry import Registry
from prunekit._utils.validate import check_count, check_range, compile_patterns
from prunekit.errors import PruneError


@pytest.mark.parametrize("bounds, inside, outside", [
    ("[]", [0, 0.5, 1], [-0.1, 1.1]),
    ("[)", [0, 0.999], [1, -1e-9]),
    ("(]", [1e-9, 1], [0, 1.5]),
    ("()", [0.5], [0, 1]),
])
def test_check_range_honours_each_bound(bounds, inside, outside):
    for value in inside:
        assert check_range("x", value, 0, 1, bounds) == value
    for value in outside:
        with pytest.raises(PruneError, match=rf"x must be a number in \{bounds[0]}0, 1\{bounds[1]}, got"):
            check_range("x", value, 0, 1, bounds)


@pytest.mark.parametrize("bad", [True, "0.5", None, math.nan, [0.5]])
def test_check_range_refuses_what_is_not_a_real_number(bad):
    with pytest.raises(PruneError):
        check_range("x", bad, 0, 1)


def test_check_count():
    assert check_count("n", 3, 1) == 3
    for bad in (0, True, 2.0, "3"):
        with pytest.raises(PruneError, match="n must be an integer >= 1"):
            check_count("n", bad, 1)


def test_compile_patterns():
    assert compile_patterns(None, "include") == []
    assert [p.pattern for p in compile_patterns(["a", "b.*"], "include")] == ["a", "b.*"]
    with pytest.raises(PruneError, match="include pattern '\\[' is not a valid regex"):
        compile_patterns("[", "include")


def test_registry_registers_lists_tags_and_refuses_unknown_names():
    things = Registry("thing", hint=", or a callable")

    @things.register("b", "b2", fast=True)
    def b():
        return "b"

    things.add("a", "A")
    assert things.names() == ["b", "b2", "a"] and list(things) == things.names()
    assert things.get("a") == "A" and things.get("b2") is b and "b" in things and len(things) == 3
    assert things.tagged("fast") == ["b", "b2"] and things.find("zzz") is None
    with pytest.raises(PruneError, match="^unknown thing 'c'; choose from: b, b2, a, or a callable$"):
        things.get("c")


def test_as_inputs_forms():
    x = torch.zeros(1)
    assert as_inputs(x) == (x,) and as_inputs([x]) == (x,) and as_inputs(([x],)) == ([x],)
    with pytest.raises(PruneError):
        as_inputs("x")
    with pytest.raises(PruneError):
        as_inputs([x], tensors_only=True)
    with pytest.raises(PruneError):
        as_inputs((x, 3), tensors_only=True)
