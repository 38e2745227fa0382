"""Models named by where they come from, for the CLI and recipes: "torchvision:NAME",
"timm:NAME", "hf:DIR" (a Hugging Face model saved with save_pretrained) or "ultralytics:CFG"
(a YOLO detection model built from an Ultralytics config such as yolov8n.yaml, untrained). Each is built
offline and untrained (hf:DIR with the folder's weights); a weights file is loaded on top by
serialization.sources. The source is recorded on the model (`prunekit_source`), so pk.save
writes it and pk.load rebuilds the architecture from the file alone, as for zoo models.

Image classifiers are built for the dataset: its class count (num_classes) and, for timm, its
input channels (in_chans). torchvision's models take 3-channel images only."""
import difflib
import os
from pathlib import Path

import torch
from torch import nn

from prunekit._utils.hf_folder import reading
from prunekit.errors import PruneError

KINDS = ("torchvision", "timm", "hf", "ultralytics")
SOURCE_ATTRIBUTE = "prunekit_source"


def is_source(name: str) -> bool:
    return isinstance(name, str) and name.partition(":")[0] in KINDS and ":" in name


def build(name: str, **kwargs) -> nn.Module:
    """A fresh model from a source spec; kwargs: num_classes, in_chans (where the source takes them)."""
    kind, _, rest = name.partition(":")
    if not rest:
        raise PruneError(f"{name!r} names no model: write {kind}:NAME")
    if kind == "hf":  # recorded absolute: pk.load may run from another folder
        name = f"hf:{Path(rest).resolve()}"
    model = {"torchvision": _torchvision, "timm": _timm, "hf": _hf, "ultralytics": _ultralytics}[kind](rest, **kwargs)
    setattr(model, SOURCE_ATTRIBUTE, {"name": name, "kwargs": kwargs})
    return model


def source_of(model: nn.Module):
    """(source spec, kwargs) a model was built from by `build`, else None."""
    found = getattr(model, SOURCE_ATTRIBUTE, None)
    return (found["name"], dict(found["kwargs"])) if isinstance(found, dict) else None


def _unknown(kind, name, choices):
    close = difflib.get_close_matches(name, choices, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return PruneError(f"{kind} has no model {name!r}{hint}")


def _torchvision(name, num_classes=None, in_chans=None):
    import torchvision
    if name not in torchvision.models.list_models():
        raise _unknown("torchvision", name, torchvision.models.list_models())
    if in_chans not in (None, 3):
        raise PruneError(f"torchvision's {name} takes 3-channel images, the data has {in_chans}; "
                         "use timm:NAME (it adapts the first layer) or RGB data")
    extra = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(name, weights=None, **extra)


def _timm(name, num_classes=None, in_chans=None):
    import timm
    if name not in timm.list_models():
        raise _unknown("timm", name, timm.list_models())
    extra = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans)) if v is not None}
    return timm.create_model(name, pretrained=False, **extra)


def _hf(folder, num_classes=None, in_chans=None):
    """A saved Hugging Face model with its own weights. A classifier (its class has `...For
    ...Classification`) is wrapped so it maps inputs to logits, as the rest of prunekit expects."""
    import transformers
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise PruneError(f"{folder}: not a Hugging Face model folder (no config.json)")
    with reading(folder):  # a cut-off config.json, no weights, a damaged weights file: one line
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        architecture = (config.architectures or [""])[0]
        cls = getattr(transformers, architecture, None)
        if cls is None:
            raise PruneError(f"{folder}: config.json names no transformers model class ({architecture!r})")
        model = cls.from_pretrained(path, local_files_only=True).eval()
    if num_classes is not None and getattr(config, "num_labels", num_classes) != num_classes:
        raise PruneError(f"{folder} has {config.num_labels} labels, the data {num_classes} classes")
    return Logits(model) if "Classification" in architecture else model


def _ultralytics(config, num_classes=None, in_chans=None):
    """A YOLO model from an Ultralytics config (yolov8n.yaml, yolo11s.yaml, ...): no weights,
    nothing downloaded."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics checks the network on import otherwise
    try:
        from ultralytics.nn.tasks import DetectionModel
    except ImportError:
        raise PruneError("ultralytics:CFG needs the ultralytics package: pip install ultralytics") from None
    extra = {k: v for k, v in (("nc", num_classes), ("ch", in_chans)) if v is not None}
    try:
        return DetectionModel(config, verbose=False, **extra).eval()
    except FileNotFoundError:
        raise PruneError(f"ultralytics has no config {config!r} (e.g. yolov8n.yaml, yolo11n.yaml)") from None


class Logits(nn.Module):
    """A Hugging Face classifier as a function of its input tensor alone, returning logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = self.model.main_input_name  # pixel_values for images, input_ids for text
        return self.model(**{name: x}).logits
