"""Reading a pk.save file: its plan checked (serialization.plan), every stored tensor decoded
and checked against the plan, before anything is built from them.

A file is input like any other: a damaged or crafted one is one PruneError naming the file and
the tensor, never a crash, a raw torch error or a wrong weight.
"""
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from prunekit.errors import PruneError
from prunekit.serialization import codecs, plan as plans, sparse_format

PART = ".__"  # a stored tensor's parts and mask: "<name>.__<part>"
MASK, VALUES, BITMASK = ".__mask", ".__values", ".__bitmask"


def read(path):
    """(tensors by key, checked plan) of a pk.save file."""
    path = Path(path)
    if not path.is_file():
        raise PruneError(f"no saved model at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:  # one read: header plan and tensors
            plan = json.loads((f.metadata() or {}).get("prunekit", "null"))
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise PruneError(f"cannot read {path}: not a valid prunekit/safetensors file ({err})") from None
    return tensors, plans.check(plan, path)


def stored_names(tensors, plan) -> set:
    """The state names the file holds, compressed ones included (nothing decoded)."""
    return ({k for k in tensors if PART not in k} | {n for n, _ in plan.get("packed", [])}
            | set(plan.get("forms", {})))


def unpacked(path, tensors, plan):
    """Tensors by state name, compressed ones restored, plus {name: mask} for masked ones;
    every tensor's shape is the plan's, every mask its tensor's."""
    state = {k: v for k, v in tensors.items() if PART not in k}
    for name, shape in plan.get("packed", []):  # files written before the forms: bitmask only
        state[name] = _decoded(path, name, lambda: sparse_format.unpack(
            {"values": tensors[name + VALUES], "bitmask": tensors[name + BITMASK], "shape": torch.tensor(shape)}))
    for name, form in plan.get("forms", {}).items():
        prefix = name + PART
        parts = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and k != name + MASK}
        state[name] = _decoded(path, name, lambda: codecs.decode(form["form"], parts, form["shape"],
                                                                  plans.DTYPES[form["dtype"]]))
    mask_of = {k[:-len(MASK)]: v for k, v in tensors.items() if k.endswith(MASK)}
    for name in [n for n, _ in plan.get("packed", [])] + list(plan.get("forms", {})):
        if name in plan.get("masked", []) and name not in mask_of:
            mask_of[name] = state[name] != 0
    _check_shapes(path, state, mask_of, plan)
    return state, mask_of


def _decoded(path, name, decode) -> torch.Tensor:
    try:
        return decode()
    except KeyError as err:
        raise PruneError(f"{path}: tensor {name!r} is damaged: its part {err} is missing") from None
    except PruneError as err:
        raise PruneError(f"{path}: tensor {name!r} is damaged: {err}") from None


def _check_shapes(path, state, mask_of, plan) -> None:
    for name, tensor in state.items():
        if list(tensor.shape) != plan["shapes"].get(name):
            raise PruneError(f"{path}: tensor {name!r} is {list(tensor.shape)}, its plan says "
                             f"{plan['shapes'].get(name)}; the file is damaged")
    for name, mask in mask_of.items():
        if name not in state or mask.shape != state[name].shape or mask.dtype not in (torch.bool, torch.uint8, torch.float32):
            raise PruneError(f"{path}: the mask of {name!r} does not fit its tensor; the file is damaged")
