"""pk.save / pk.load: one safetensors file whose header carries a JSON plan.

The plan records the zoo architecture (if any), every layer's weight shape (so a
structurally pruned model is rebuilt by slicing a fresh one), and which tensors are masked
or stored compressed (values + bitmask). Nothing is unpickled on load.
"""
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from prunekit import masks, surgery
from prunekit._utils.atomic import atomic_path
from prunekit.errors import PruneError
from prunekit.deploy.choose import apply_kernels
from prunekit.deploy.sparse_layer import sparse_layers_as_plain
from prunekit.serialization import codecs, sparse_format
from prunekit.structured import blocks
from prunekit.targets import effective_state as _effective_state
from prunekit.targets import prunable_modules, tied_names
from prunekit.zoo import models as zoo

FORMATS = ("dense", "compressed")
_PART = ".__"  # a stored tensor's parts and mask: "<name>.__<part>"
_MASK, _VALUES, _BITMASK = ".__mask", ".__values", ".__bitmask"


def _shapes(state):
    return {name: list(tensor.shape) for name, tensor in state.items()}


def _distinct_storage(tensors: dict) -> dict:
    """The same tensors, a copy where one shares memory with an earlier one (a weight shared
    by two layers has one mask): safetensors refuses shared storage."""
    seen, out = set(), {}
    for name, tensor in tensors.items():
        out[name] = tensor.clone() if tensor.numel() and tensor.data_ptr() in seen else tensor
        seen.add(tensor.data_ptr())
    return out


def save(model: nn.Module, path, format: str = "dense", *, int8: bool = False) -> Path:
    """Write `model` to `path` (safetensors). format "dense", or "compressed": each prunable
    weight in the smallest of bitmask, CSR-16/32 and packed N:M (serialization.codecs), its
    values as int8 with a scale per row if `int8`. Layers running sparse kernels (pk.to_sparse)
    are written as plain weights and get the same kernels back on load."""
    if format not in FORMATS:
        raise PruneError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    if int8 and format != "compressed":
        raise PruneError('int8 values are a compressed form: pass format="compressed"')
    with sparse_layers_as_plain(model) as kernels:
        tensors, plan = _tensors_and_plan(model, format, int8)
    plan["kernels"] = kernels
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"prunekit": json.dumps(plan)})
    return path


def _tensors_and_plan(model, format, int8):
    tensors, forms = {}, {}
    masked = _distinct_storage({f"{m}.{t}" if m else t: masks.get_mask(mod, t)
                                for m, mod, t in masks.masked_modules(model)})
    prunable = {f"{n}.weight" if n else "weight" for n, _ in prunable_modules(model)}
    state = _effective_state(model)
    tied = tied_names(model, state)  # a weight shared by two layers is written once, its mask too
    for name, tensor in state.items():
        if name in tied:
            continue
        tensor = tensor.contiguous()
        coded = codecs.encode(tensor, int8) if format == "compressed" and name in prunable else None
        if coded is None:
            tensors[name] = tensor
            stored = tensor
        else:
            form, parts = coded
            tensors.update({f"{name}{_PART}{k}": v.contiguous() for k, v in parts.items()})
            forms[name] = {"form": form, "shape": list(tensor.shape), "dtype": str(tensor.dtype)[6:]}
            stored = codecs.decode(form, parts, list(tensor.shape), tensor.dtype)
        if name in masked and (coded is None or not torch.equal(masked[name].to(torch.bool), stored != 0)):
            tensors[name + _MASK] = masked[name].contiguous()  # else the stored zeros are the mask
    arch = zoo.architecture(model)
    plan = {"prunekit": 1, "format": format, "arch": arch and {"name": arch[0], "kwargs": arch[1]},
            "shapes": _shapes(state), "attrs": surgery.shape_attrs(model), "masked": sorted(masked),
            "packed": [], "forms": forms, "skipped": blocks.skipped(model), "tied": tied}
    return tensors, plan


def _read(path):
    path = Path(path)
    if not path.is_file():
        raise PruneError(f"no saved model at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:  # one read: header plan and tensors
            plan = json.loads((f.metadata() or {}).get("prunekit", "null"))
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise PruneError(f"cannot read {path}: not a valid prunekit/safetensors file ({err})") from None
    if not isinstance(plan, dict) or plan.get("prunekit") != 1:
        raise PruneError(f"{path} has no prunekit plan; it was not written by pk.save")
    return tensors, plan


def _unpacked(tensors, plan):
    """Tensors by state name, compressed ones restored, plus {name: mask} for masked ones."""
    state = {k: v for k, v in tensors.items() if _PART not in k}
    mask_of = {k[:-len(_MASK)]: v for k, v in tensors.items() if k.endswith(_MASK)}
    for name, shape in plan["packed"]:  # files written before the forms: bitmask only
        state[name] = sparse_format.unpack({"values": tensors[name + _VALUES],
                                            "bitmask": tensors[name + _BITMASK],
                                            "shape": torch.tensor(shape)})
    for name, form in plan.get("forms", {}).items():
        prefix = name + _PART
        parts = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and k != name + _MASK}
        state[name] = codecs.decode(form["form"], parts, form["shape"], getattr(torch, form["dtype"]))
    for name in [n for n, _ in plan["packed"]] + list(plan.get("forms", {})):
        if name in plan["masked"] and name not in mask_of:
            mask_of[name] = state[name] != 0
    return state, mask_of


def _resize_plan(model, plan):
    """Cuts that slice a fresh model down to the saved shapes and sizes; validated only.

    Entries are dropped from the end: the values are overwritten by the saved ones anyway.
    """
    current = _effective_state(model)
    tensors, attrs = {}, {}
    for name, saved in plan["shapes"].items():
        if name not in current:
            continue  # reported with the other mismatches by the caller
        shape = list(current[name].shape)
        if len(saved) != len(shape) or any(s > c for s, c in zip(saved, shape)):
            raise PruneError(f"saved tensor {name!r} has shape {saved}, larger than or unlike the "
                             f"given model's {shape}; pass an unpruned model of the saved class")
        dims = {d: torch.arange(s) for d, (s, c) in enumerate(zip(saved, shape)) if s != c}
        if dims:
            module, _, tensor = name.rpartition(".")
            tensors[(module, tensor)] = dims
    modules = dict(model.named_modules())
    for module, values in plan.get("attrs", {}).items():
        if module not in modules:
            raise PruneError(f"saved module {module!r} does not exist in the given model; pass the "
                             "model class the file was saved from")
        for attr, value in values.items():
            attrs[(module, attr)] = tuple(value) if isinstance(value, list) else value
    return surgery.Cuts(tensors, attrs)


def _remove_skipped(model, skipped):
    """Blocks removed by layer pruning (granularity "layer") are removed from `model` too."""
    names = dict(model.named_modules())
    for name in skipped:
        if name not in names:
            raise PruneError(f"saved model skips block {name!r}, which the given model lacks; pass "
                             "the model class the file was saved from")
    blocks.remove_blocks(model, list(skipped.items()))


def load(path, model: nn.Module = None) -> nn.Module:
    """Rebuild a model saved by pk.save (zoo models from data alone, others into `model`)."""
    tensors, plan = _read(path)
    try:
        return _rebuild(path, tensors, plan, model)
    except (KeyError, TypeError, IndexError) as err:  # a plan edited by hand or cut short
        raise PruneError(f"{path}: its prunekit plan is damaged ({type(err).__name__}: {err})") from None


def _rebuild(path, tensors, plan, model):
    if model is None:
        if not plan.get("arch"):
            raise PruneError(f"{path} holds a model prunekit cannot rebuild alone; pass model= a fresh "
                             "instance of its class")
        model = zoo.build(plan["arch"]["name"], **plan["arch"]["kwargs"])
    state, mask_of = _unpacked(tensors, plan)
    skipped = plan.get("skipped", {})
    tied = plan.get("tied", {})  # files written before ties were saved once have none
    expected = {k for k in _effective_state(model)
                if k not in tied and not any(k.startswith(b + ".") for b in skipped)}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise PruneError(f"{path} does not match the model: missing {missing}, unexpected {extra}")
    _remove_skipped(model, skipped)
    surgery.apply(model, _resize_plan(model, plan))
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, value in state.items():
            module_name, _, tensor_name = key.rpartition(".")
            if key in mask_of:
                masks.attach(modules[module_name], mask_of[key], tensor_name)
            target = masks.raw_tensor(modules[module_name], tensor_name)
            if target.shape != value.shape:
                raise PruneError(f"{path}: tensor {key!r} has shape {list(value.shape)}, model has "
                                 f"{list(target.shape)}")
            if target.dtype == value.dtype:
                target.copy_(value)
            else:  # a half-precision model stays half precision
                target.data = value.to(target.device)
    _retie(modules, tied)
    apply_kernels(model, plan.get("kernels", {}))
    return model


def _retie(modules, tied):
    """Each tensor saved once for several layers: the later layers get the earlier one's
    stored tensor (tied again if the given model does not tie them itself) and its mask."""
    for name, first in tied.items():
        module, _, tensor = name.rpartition(".")
        source, _, source_tensor = first.rpartition(".")
        stored = masks.raw_tensor(modules[source], source_tensor)
        if masks.raw_tensor(modules[module], tensor) is not stored:
            setattr(modules[module], tensor, stored)
        mask = masks.get_mask(modules[source], source_tensor)
        if mask is not None:
            masks.attach(modules[module], mask, tensor)  # the same buffer: one mask for both
