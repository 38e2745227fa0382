"""pk.save / pk.load: one safetensors file whose header carries a JSON plan.

The plan records the zoo architecture (if any), every layer's weight shape (so a
structurally pruned model is rebuilt by slicing a fresh one), and which tensors are masked
or stored compressed (values + bitmask). Nothing is unpickled on load.
"""
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from prunekit import masks, surgery
from prunekit._utils.atomic import atomic_path
from prunekit.errors import PruneError
from prunekit.deploy.choose import apply_kernels
from prunekit.deploy.sparse_layer import sparse_layers_as_plain
from prunekit.deploy.kernels import resolve
from prunekit.serialization import codecs, read
from prunekit.structured import blocks
from prunekit.targets import effective_state as _effective_state
from prunekit.targets import effective_tensors, prunable_modules, tied_names
from prunekit.zoo import models as zoo

FORMATS = ("dense", "compressed")
_PART, _MASK = read.PART, read.MASK


def _shapes(state):
    return {name: list(tensor.shape) for name, tensor in state.items()}


def _model_shapes(model) -> dict:
    """{name: shape} of every persistent tensor, masked ones by their effective value's shape
    (the stored tensor's: the model may be on the meta device)."""
    return {name: list(stored.shape) for name, stored in _stored(model).items()}


def _stored(model) -> dict:
    """{name: stored tensor} of every persistent tensor (a masked one's raw weight)."""
    return {name: stored for name, _, _, stored in effective_tensors(model)}


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
    _check_rebuilds(plan)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"prunekit": json.dumps(plan)})
    return path


def _check_rebuilds(plan) -> None:
    """pk.load's steps (blocks removed, fresh model cut to the saved shapes), done before the
    file is written on a fresh model of the saved architecture: a plan that would not rebuild
    the model is a PruneError now, not a lost result later. A model of no known architecture
    is rebuilt into the instance its user passes to pk.load, which save cannot make."""
    if not plan["arch"]:
        return
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            fresh = zoo.build(plan["arch"]["name"], **plan["arch"]["kwargs"])
    except (NotImplementedError, RuntimeError):  # an __init__ that reads its tensors' values
        fresh = zoo.build(plan["arch"]["name"], **plan["arch"]["kwargs"])
    try:
        _remove_skipped(fresh, plan["skipped"])
        surgery.apply(fresh, _resize_plan(fresh, plan))
        rebuilt = _model_shapes(fresh)
    except (PruneError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise PruneError(f"pk.save: a model rebuilt from this save would fail ({type(err).__name__}: {err}); "
                         "nothing was written. This is a prunekit bug: please report it") from None
    wrong = [n for n, shape in plan["shapes"].items() if rebuilt.get(n, shape) != shape]
    if wrong:
        raise PruneError(f"pk.save: a model rebuilt from this save would give {wrong[0]!r} the shape "
                         f"{rebuilt[wrong[0]]}, not {plan['shapes'][wrong[0]]}; nothing was written. This is "
                         "a prunekit bug: please report it")


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


def _resize_plan(model, plan):
    """Cuts that slice a fresh model down to the saved shapes and sizes; validated only.

    Entries are dropped from the end: the values are overwritten by the saved ones anyway.
    """
    current = _model_shapes(model)
    tensors, attrs = {}, {}
    for name, saved in plan["shapes"].items():
        if name not in current:
            continue  # reported with the other mismatches by the caller
        shape = current[name]
        if len(saved) != len(shape) or any(s > c for s, c in zip(saved, shape)):
            raise PruneError(f"saved tensor {name!r} has shape {saved}, larger than or unlike the "
                             f"given model's {shape}; pass an unpruned model of the saved class")
        dims = {d: torch.arange(s) for d, (s, c) in enumerate(zip(saved, shape)) if s != c}
        if dims:
            module, _, tensor = name.rpartition(".")
            tensors[(module, tensor)] = dims
    modules = dict(model.named_modules(remove_duplicate=False))
    for module, values in plan.get("attrs", {}).items():
        if module not in modules:
            raise PruneError(f"saved module {module!r} does not exist in the given model; pass the "
                             "model class the file was saved from")
        for attr, value in values.items():
            attrs[(module, attr)] = tuple(value) if isinstance(value, list) else value
    return surgery.Cuts(tensors, attrs)


def _check_dtypes(path, model, state) -> None:
    """Each stored tensor has its model tensor's dtype, or every float tensor in the file
    shares one other float dtype (a model saved in half precision)."""
    own = {name: stored.dtype for name, stored in _stored(model).items()}
    floats = {v.dtype for v in state.values() if v.is_floating_point()}
    for key, value in state.items():
        want = own.get(key)
        if want is None or value.dtype == want:
            continue
        if not (value.is_floating_point() and want.is_floating_point and len(floats) == 1):
            raise PruneError(f"{path}: tensor {key!r} is {str(value.dtype)[6:]}, the model's is "
                             f"{str(want)[6:]}; the file is damaged")


def _check_modules(path, model, plan) -> None:
    """Every module the plan names for tied weights and kernels is in the model, and every kernel
    is one prunekit has (skipped blocks are checked by _remove_skipped, before it removes any)."""
    modules = dict(model.named_modules(remove_duplicate=False))
    named = {n.rpartition(".")[0] for pair in plan.get("tied", {}).items() for n in pair}
    for name in sorted(named | set(plan.get("kernels", {}))):
        if name not in modules:
            raise PruneError(f"{path}: its plan names module {name!r}, which the model lacks; pass the "
                             "model class the file was saved from")
    for kernel in plan.get("kernels", {}).values():
        resolve(kernel)


def _remove_skipped(model, skipped):
    """Blocks removed by layer pruning (granularity "layer") are removed from `model` too."""
    names = dict(model.named_modules(remove_duplicate=False))
    for name in skipped:
        if name not in names:
            raise PruneError(f"saved model skips block {name!r}, which the given model lacks; pass "
                             "the model class the file was saved from")
    blocks.remove_blocks(model, list(skipped.items()))


def load(path, model: nn.Module = None) -> nn.Module:
    """Rebuild a model saved by pk.save (zoo models from data alone, others into `model`).
    The file is checked whole (plan, every tensor, names and shapes against the model) before
    the model changes: a damaged file is one PruneError and leaves a given model as it was."""
    tensors, plan = read.read(path)
    try:
        return _rebuild(path, tensors, plan, model)
    except (KeyError, TypeError, IndexError) as err:  # a plan edited by hand or cut short
        raise PruneError(f"{path}: its prunekit plan is damaged ({type(err).__name__}: {err})") from None


def _fresh(path, arch) -> nn.Module:
    try:
        return zoo.build(arch["name"], **arch["kwargs"])
    except PruneError:
        raise
    except (TypeError, ValueError, RuntimeError, KeyError) as err:  # kwargs edited by hand
        raise PruneError(f"{path}: its plan's architecture {arch['name']!r} cannot be built with "
                         f"{arch['kwargs']} ({type(err).__name__}: {err})") from None


def _rebuild(path, tensors, plan, model):
    if model is None:
        if not plan.get("arch"):
            raise PruneError(f"{path} holds a model prunekit cannot rebuild alone; pass model= a fresh "
                             "instance of its class")
        model = _fresh(path, plan["arch"])
    skipped, tied = plan.get("skipped", {}), plan.get("tied", {})  # older files have neither
    names = read.stored_names(tensors, plan)
    expected = {k for k in _model_shapes(model)
                if k not in tied and not any(k.startswith(b + ".") for b in skipped)}
    if names != expected:
        missing, extra = sorted(expected - names)[:3], sorted(names - expected)[:3]
        raise PruneError(f"{path} does not match the model: missing {missing}, unexpected {extra}")
    _check_modules(path, model, plan)
    cuts = _resize_plan(model, plan)  # checked against the model before it changes
    state, mask_of = read.unpacked(path, tensors, plan)  # every tensor decoded and checked
    _check_dtypes(path, model, state)
    _remove_skipped(model, skipped)
    surgery.apply(model, cuts)
    modules = dict(model.named_modules(remove_duplicate=False))
    with torch.no_grad():
        for key, value in state.items():
            module_name, _, tensor_name = key.rpartition(".")
            target = masks.raw_tensor(modules[module_name], tensor_name)
            if target.shape != value.shape:
                raise PruneError(f"{path}: tensor {key!r} has shape {list(value.shape)}, model has "
                                 f"{list(target.shape)}")
            if target.dtype == value.dtype:
                target.copy_(value)
            else:  # a half-precision model stays half precision
                target.data = value.to(target.device)
            if key in mask_of:  # after the copy: the mask zeroes what the file stored there
                masks.attach(modules[module_name], mask_of[key], tensor_name)
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
