"""The JSON plan in a pk.save file, checked field by field before anything is built from it.

A plan may have been edited by hand or crafted: a string where a dict belongs, a negative
shape, a dtype torch lacks, or a shape of 2^20 x 2^20 that would ask for terabytes. Each is one
PruneError naming the field, raised before a model is built or a tensor decoded.
"""
import os

import torch

from prunekit.errors import PruneError
from prunekit.serialization.codecs import FORMS

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


class _Bad(Exception):
    """A field that fails its check; `check` turns it into one PruneError naming the file."""


def _need(condition, field: str, what: str) -> None:
    if not condition:
        raise _Bad(f"{field} must be {what}")


def _shape(value, field: str) -> list:
    _need(isinstance(value, list) and all(type(s) is int and s >= 0 for s in value), field,
          "a list of sizes (integers >= 0)")
    return value


def _names(value, field: str, check_value) -> None:
    _need(isinstance(value, dict) and all(isinstance(k, str) for k in value), field, "an object keyed by names")
    for key, item in value.items():
        check_value(item, f"{field}[{key!r}]")


def _str(value, field):
    _need(isinstance(value, str), field, "a string")


def _attrs(value, field):
    _need(isinstance(value, dict) and all(_size(v) or (isinstance(v, list) and all(map(_size, v)))
                                          for v in value.values()), field, "an object of sizes (integers >= 0)")


def _size(value) -> bool:
    return type(value) is int and 0 <= value < 2**31


def _form(value, field):
    _need(isinstance(value, dict), field, "an object with form, shape and dtype")
    _need(isinstance(value.get("form"), str) and value["form"] in FORMS, f"{field}.form", f"one of {', '.join(FORMS)}")
    _shape(value.get("shape"), f"{field}.shape")
    _need(isinstance(value.get("dtype"), str) and value["dtype"] in DTYPES, f"{field}.dtype", f"one of {', '.join(DTYPES)}")


def _fields(plan: dict) -> None:
    _need(plan.get("format") in ("dense", "compressed"), "format", '"dense" or "compressed"')
    arch = plan.get("arch")
    _need(arch is None or (isinstance(arch, dict) and isinstance(arch.get("name"), str)
                           and isinstance(arch.get("kwargs"), dict)), "arch", "null or {name, kwargs}")
    _names(plan.get("shapes"), "shapes", _shape)
    _names(plan.get("attrs", {}), "attrs", _attrs)
    _names(plan.get("forms", {}), "forms", _form)
    _names(plan.get("tied", {}), "tied", _str)
    _names(plan.get("kernels", {}), "kernels", _str)
    _names(plan.get("skipped", {}), "skipped", lambda v, f: _need(type(v) is int and v >= 0, f, "an integer"))
    masked = plan.get("masked", [])
    _need(isinstance(masked, list) and all(isinstance(m, str) for m in masked), "masked", "a list of names")
    packed = plan.get("packed", [])
    _need(isinstance(packed, list) and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                           for p in packed), "packed", "a list of [name, shape]")
    for name, shape in packed:
        _shape(shape, f"packed[{name!r}]")


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no bound from here
        return 1 << 62


def _numel(shape) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def check(plan, path) -> dict:
    """The plan, once every field has the type and range pk.save writes; else one PruneError.
    The tensors it describes must fit this machine's memory (a crafted shape asks for more)."""
    if not isinstance(plan, dict) or plan.get("prunekit") != 1:
        raise PruneError(f"{path} has no prunekit plan; it was not written by pk.save")
    try:
        _fields(plan)
    except _Bad as err:
        raise PruneError(f"{path}: its prunekit plan is damaged: {err}") from None
    wanted = sum(_numel(shape) for shape in plan["shapes"].values())  # bytes, at one or more per value
    if wanted > physical_memory():
        raise PruneError(f"{path}: its plan describes {wanted / 2**30:.0f} GiB of tensors, more than this "
                         f"machine's {physical_memory() / 2**30:.0f} GiB of memory; the file is damaged or crafted")
    return plan
