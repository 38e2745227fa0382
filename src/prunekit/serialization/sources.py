"""A user's model from one string, as the CLI and recipes name it, with optional weights:

- a zoo name (lenet5, ...), "torchvision:NAME", "timm:NAME", "hf:DIR", "ultralytics:CFG" (zoo.sources);
- a file written by pk.save;
- a whole pickled model (torch.save(model)), only with trust_pickle: unpickling runs code.

Weights come from a safetensors file or a state dict read with torch.load(weights_only=True)
(no code runs); a checkpoint dict holding it under "state_dict" or "model" (Lightning, many
training scripts) and DDP's "module." prefixes are unwrapped. A mismatch is one line naming
the first differing keys; the model is not touched until the weights are known to fit."""
import math
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from prunekit.errors import PruneError
from prunekit.serialization.io import load as load_saved
from prunekit.zoo import models as zoo
from prunekit.zoo import sources

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def load_model(spec: str, *, weights=None, trust_pickle: bool = False, **build_kwargs) -> nn.Module:
    """The model `spec` names, with `weights` (a file) loaded into it if given. build_kwargs
    (num_classes, in_chans, ...) go to a model built from a name; a file already has its shape."""
    check_spec(spec)
    path = Path(spec)
    if is_name(spec):
        model = zoo.build(spec, **build_kwargs)
    elif path.suffix in PICKLE_SUFFIXES:
        model = _pickled_model(path, trust_pickle)
    else:
        model = load_saved(path)
    if weights is not None:
        load_weights(model, weights, trust_pickle=trust_pickle)
    return model


def is_name(spec: str) -> bool:
    """True for a model built from its name (zoo, torchvision:, timm:, hf:), not read from a file."""
    return sources.is_source(spec) or spec in zoo.MODELS


def check_spec(spec: str) -> None:
    """Refuse, before any work, a string that names no model (a file is checked when read)."""
    if not (is_name(spec) or Path(spec).suffix in (".safetensors", *PICKLE_SUFFIXES) or Path(spec).is_file()):
        raise PruneError(f"unknown model {spec!r}: give a zoo name ({', '.join(zoo.list_models())}), "
                         "torchvision:NAME, timm:NAME, hf:DIR, ultralytics:CFG, or a file written by pk.save")


def is_pretrained(spec: str, weights=None) -> bool:
    """True when the model comes with its weights (a file, hf:DIR, or a weights file given):
    it is the dense model as it is, not one to train from scratch."""
    return weights is not None or not (spec in zoo.MODELS or spec.startswith(("torchvision:", "timm:")))


def for_data(spec: str, dataset) -> dict:
    """Constructor arguments that fit a model named `spec` to a dataset: its class count, and
    its input's channels (images) or features (flat samples)."""
    shape = tuple(dataset.input_shape)
    if spec.startswith(("torchvision:", "timm:")):
        if len(shape) != 3:
            raise PruneError(f"{spec} takes images (channels, height, width); {dataset.name}'s samples are "
                             f"{list(shape)}")
        return {"num_classes": dataset.num_classes, "in_chans": shape[0]}
    if spec.startswith("hf:"):
        return {"num_classes": dataset.num_classes}
    if spec not in zoo.MODELS:
        return {}  # a file: its shape is in it
    if spec == "lenet5":
        return {"in_channels": shape[0], "num_classes": dataset.num_classes, "image_size": shape[-1]}
    return {"in_features": math.prod(shape), "num_classes": dataset.num_classes}


def check_outputs(model: nn.Module, dataset) -> None:
    """One clear line where the model's outputs do not match the dataset's classes."""
    training = model.training
    with torch.no_grad():
        out = model.eval()(dataset.test.x[:2])
    model.train(training)
    if not isinstance(out, torch.Tensor) or out.shape != (len(dataset.test.x[:2]), dataset.num_classes):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PruneError(f"the model maps 2 samples to {got}, the data has {dataset.num_classes} classes: "
                         "its last layer must give one output per class")


def load_weights(model: nn.Module, path, *, trust_pickle: bool = False) -> nn.Module:
    """Copy the weights in `path` into `model` (every key must match, shapes included)."""
    state = _unwrapped(read_state_dict(path, trust_pickle=trust_pickle))
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own), key=str)
    if missing or extra:
        raise PruneError(f"{path} does not fit the model: missing {missing[:3]}, unexpected {extra[:3]}"
                         f" ({len(missing)} and {len(extra)} keys)")
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        raise PruneError(f"{path} does not fit the model: {wrong[0]} is {list(state[wrong[0]].shape)} "
                         f"there and {list(own[wrong[0]].shape)} in the model ({len(wrong)} such tensors)")
    model.load_state_dict(state)
    return model


def read_state_dict(path, *, trust_pickle: bool = False) -> dict:
    """{name: tensor} from a safetensors file, or a torch file read without running code."""
    path = Path(path)
    if not path.is_file():
        raise PruneError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise PruneError(f"cannot read {path}: not a valid safetensors file ({_first_line(err)})") from None
    loaded = _torch_load(path, trust_pickle)
    if isinstance(loaded, nn.Module):
        return loaded.state_dict()
    if not isinstance(loaded, dict):
        raise PruneError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors")
    return loaded


def _pickled_model(path, trust_pickle) -> nn.Module:
    loaded = _torch_load(path, trust_pickle)
    if not isinstance(loaded, nn.Module):
        raise PruneError(f"{path} holds weights, not a model: name the model and pass the file as its weights "
                         "(--weights)")
    return loaded


def _torch_load(path, trust_pickle):
    if not path.is_file():
        raise PruneError(f"no file at {path}")
    _check_torch_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        if trust_pickle:
            raise PruneError(f"cannot read {path}: {_first_line(err)}") from None
        raise PruneError(f"{path} holds pickled objects beyond tensors, which run code when read; "
                         "pass --trust-pickle (trust_pickle=True) only if you trust the file") from None
    except Exception as err:  # noqa: BLE001 - truncated, or bytes the unpickler trips on (KeyError, IndexError...)
        raise PruneError(f"cannot read {path}: not a complete torch file ({_first_line(err)})") from None


def _check_torch_file(path) -> None:
    """Refuse, before torch.load, a file torch.save did not write: torch.save writes a zip
    archive ("PK"), its legacy format a pickle (protocol 2+, first byte 0x80). Any other file
    (text, CSV, JSON) would reach the unpickler, which fails with KeyError or IndexError, or
    reports it as "pickled objects" and wrongly points to --trust-pickle."""
    with open(path, "rb") as f:
        head = f.read(2)
    if not head:
        raise PruneError(f"cannot read {path}: the file is empty")
    if head != b"PK" and head[:1] != b"\x80":
        raise PruneError(f"cannot read {path}: not a torch file (torch.save writes a zip archive) nor safetensors; "
                         "give a .safetensors file or a state dict written by torch.save")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unwrapped(state: dict) -> dict:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise PruneError("the weights file holds no tensors")
    if all(k.startswith("module.") for k in tensors):  # saved from a DDP-wrapped model
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors
