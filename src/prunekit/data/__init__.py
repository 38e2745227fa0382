"""Datasets held in memory as three Splits: the built-in ones (fetched on purpose into
$PRUNEKIT_HOME by `prunekit data fetch`), and the user's own."""
import os
from pathlib import Path

from prunekit.data.sources import DATASETS, idx_folder, read
from prunekit.data.split import Dataset, Split, content_name, to_dataset
from prunekit.data.user import IMAGE_SIZE, from_folder, from_npz, from_torch
from prunekit.errors import PruneError

__all__ = ["DATASETS", "IMAGE_SIZE", "Dataset", "Split", "from_folder", "from_npz", "from_torch", "load"]


def load(source, *, image_size: int = IMAGE_SIZE) -> Dataset:
    """The Dataset that `source` names. A library call never downloads: a built-in dataset
    that has not been fetched raises one line naming the command that fetches it.

    - a name from DATASETS ("mnist", "fashion-mnist", "mnist1d", "digits");
    - "npz:FILE": an .npz of x_train, y_train (optionally x_val, y_val, x_test, y_test);
    - "folder:PATH": images in one subfolder per class, resized to image_size x image_size;
    - "hf:DIR": a Hugging Face dataset written by save_to_disk (data.hf_disk);
    - a folder of MNIST-format IDX files ("./mnist" for one that shares a built-in name);
    - a torch Dataset or DataLoader of (input, label): see from_torch.
    Missing val/test splits are carved deterministically from train (data.split.carve)."""
    import torch.utils.data
    if isinstance(source, (torch.utils.data.Dataset, torch.utils.data.DataLoader)):
        return from_torch(source)
    if not isinstance(source, (str, os.PathLike)):
        raise PruneError(f"cannot load a {type(source).__name__}: give a dataset name, npz:FILE, "
                         "folder:PATH, or a torch Dataset or DataLoader")
    name = str(source)
    if name.lower() in DATASETS:
        return to_dataset(name.lower(), read(name.lower()), num_classes=10)
    kind, _, rest = name.partition(":")
    if kind == "npz" and rest:
        return from_npz(rest)
    if kind == "folder" and rest:
        return from_folder(rest, image_size)
    if kind == "hf" and rest:
        from prunekit.data.hf_disk import from_hf_disk
        return from_hf_disk(rest, image_size)
    if Path(name).is_dir():
        arrays = idx_folder(Path(name))
        return to_dataset(content_name("idx", Path(name).resolve().name, arrays), arrays)
    raise PruneError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, "
                     "npz:FILE, folder:PATH, hf:DIR, or a folder of MNIST-format IDX files")
