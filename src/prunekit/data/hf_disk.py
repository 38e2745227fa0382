"""A Hugging Face dataset saved with `save_to_disk` (read by datasets.load_from_disk, offline),
as a Dataset (CLI: hf:DIR).

The inputs are the first column that is an Image feature or is named image, img,
pixel_values or x; the labels a ClassLabel column or one named label, labels or y. Images are
resized to image_size x image_size as folder:PATH images are (data.user); arrays are taken as
they are. Splits: train, validation (or val), test; a missing one is carved from train."""
from pathlib import Path

import numpy as np

from prunekit.data.split import Dataset, carve, content_name, to_dataset
from prunekit.data.user import check_arrays, image_pixels
from prunekit.errors import PruneError

INPUT_NAMES = ("image", "img", "pixel_values", "x")
LABEL_NAMES = ("label", "labels", "y")
SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def from_hf_disk(path, image_size: int) -> Dataset:
    import datasets
    root = Path(path)
    if not root.is_dir():
        raise PruneError(f"no folder at {root}; give hf:DIR, a dataset written by save_to_disk")
    try:
        loaded = datasets.load_from_disk(str(root))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise PruneError(f"cannot read {root} as a saved Hugging Face dataset ({str(err).splitlines()[0]})") from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    kinds = {SPLIT_NAMES[name]: split for name, split in splits.items() if name in SPLIT_NAMES}
    if "train" not in kinds:
        raise PruneError(f"{root} has splits {sorted(splits)}; it needs a train split")
    x_col, y_col = _columns(kinds["train"], root)
    arrays, num_classes = {}, _num_classes(kinds["train"].features[y_col])
    for kind, split in kinds.items():
        arrays[f"x_{kind}"] = _inputs(split, x_col, image_size)
        arrays[f"y_{kind}"] = np.asarray(split[y_col], dtype=np.int64)
    arrays = carve(check_arrays(arrays, str(root)), str(root))
    return to_dataset(content_name("hf", root.name, arrays), arrays, num_classes=num_classes)


def _columns(split, root):
    import datasets
    features = split.features
    images = [n for n, f in features.items() if isinstance(f, datasets.Image)]
    labels = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
    x_col = next(iter(images + [n for n in INPUT_NAMES if n in features]), None)
    y_col = next(iter(labels + [n for n in LABEL_NAMES if n in features]), None)
    if x_col is None or y_col is None:
        raise PruneError(f"{root} has columns {sorted(features)}; prunekit needs inputs (an Image column, or one "
                         f"named {', '.join(INPUT_NAMES)}) and labels (a ClassLabel, or {', '.join(LABEL_NAMES)})")
    return x_col, y_col


def _num_classes(feature):
    import datasets
    return feature.num_classes if isinstance(feature, datasets.ClassLabel) else None


def _inputs(split, column, image_size) -> np.ndarray:
    import datasets
    if isinstance(split.features[column], datasets.Image):
        return image_pixels([image for image in split[column]], image_size, where=f"column {column!r}")
    return np.asarray(split.with_format("numpy")[column])
