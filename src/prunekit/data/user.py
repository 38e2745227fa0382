"""A user's own data as a Dataset: any torch Dataset/DataLoader (Python API), an .npz of
arrays, or a folder of images with one subfolder per class (CLI: npz:FILE, folder:PATH).

Everything is held in memory as float32 (uint8 inputs are scaled to [0, 1]); labels are
integer classes 0..C-1. A split that is not given is carved from train by data.split.carve:
10 % each for val and test, by a fixed permutation, so the same data always splits the same.
Bad input is one PruneError line naming the file and what it should hold."""
import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from prunekit.data.split import KEYS, Dataset, carve, content_name, to_dataset
from prunekit.errors import PruneError

log = logging.getLogger(__name__)

IMAGE_SIZE = 32  # folder images are resized (squashed, not cropped) to IMAGE_SIZE x IMAGE_SIZE
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_NPZ_HELP = "arrays x_train, y_train (optionally x_val, y_val, x_test, y_test), written by numpy.savez"


def from_torch(train, val=None, test=None, *, name=None) -> Dataset:
    """A Dataset from torch Datasets or DataLoaders whose items (or batches) are (input, label).

    Each is read once, in its own order, into memory; a missing val or test is carved from
    train (see the module note). Pass a Dataset, or a DataLoader without shuffling, for splits
    that are the same on every call. `name` defaults to one derived from the content."""
    arrays = {}
    for kind, source in (("train", train), ("val", val), ("test", test)):
        if source is not None:
            arrays[f"x_{kind}"], arrays[f"y_{kind}"] = _read_torch(source, kind)
    where = f"torch data {name!r}" if name else "torch data"
    arrays = carve(check_arrays(arrays, where), where)
    return to_dataset(name or content_name("torch", "data", arrays), arrays)


def _read_torch(source, kind):
    from torch.utils.data import DataLoader
    if not isinstance(source, DataLoader):  # a Dataset, map-style or iterable: batch it here
        source = DataLoader(source, batch_size=256, shuffle=False)
    xs, ys = [], []
    try:
        for batch in source:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise PruneError(f"the {kind} data must yield (input, label) pairs, got {type(batch).__name__}")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
    except TypeError as exc:  # default_collate's refusal, e.g. a PIL image without ToTensor()
        raise PruneError(f"cannot batch the {kind} data ({exc}); give inputs as tensors or arrays "
                         "(for images add torchvision.transforms.ToTensor()) and labels as ints") from None
    if not xs:
        raise PruneError(f"the {kind} data is empty")
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def from_npz(path) -> Dataset:
    """A Dataset from an .npz file of KEYS arrays; only x_train and y_train are required."""
    path = Path(path)
    if not path.is_file():
        raise PruneError(f"no .npz file at {path}; give npz:FILE holding {_NPZ_HELP}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise PruneError(f"{path} is a single .npy array; save {_NPZ_HELP}")
    if not magic.startswith(b"PK"):
        raise PruneError(f"{path} is not an .npz file; save {_NPZ_HELP}")
    try:
        with np.load(path, allow_pickle=False) as f:
            found = list(f.files)
            arrays = {k: f[k] for k in KEYS if k in found}
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise PruneError(f"cannot read {path} ({exc}); save {_NPZ_HELP}") from None
        raise PruneError(f"{path} holds pickled objects, which prunekit never loads; "
                         "save plain numeric arrays") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise PruneError(f"cannot read {path}: a damaged .npz ({exc})") from None
    if "x_train" not in arrays or "y_train" not in arrays:
        raise PruneError(f"{path} has arrays {sorted(found)}; it must hold {_NPZ_HELP}")
    extra = sorted(set(found) - set(KEYS))
    if extra:
        log.info("%s: ignoring arrays %s", path, extra)
    arrays = carve(check_arrays(arrays, str(path)), str(path))
    return to_dataset(content_name("npz", path.stem, arrays), arrays)


def check_arrays(arrays, where) -> dict:
    """Refuse arrays that would fail later, deep inside training, with a line naming the fix."""
    for kind in ("train", "val", "test"):
        x, y = arrays.get(f"x_{kind}"), arrays.get(f"y_{kind}")
        if x is None and y is None:
            continue
        if x is None or y is None:
            raise PruneError(f"{where}: x_{kind} and y_{kind} go together; give both or neither")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or x.ndim < 2:
            raise PruneError(f"{where}: x_{kind} must be numbers shaped (N, ...), got {x.dtype} {x.shape}")
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise PruneError(f"{where}: y_{kind} must be integer class labels shaped (N,), "
                             f"got {y.dtype} {y.shape}")
        if len(x) != len(y) or len(y) == 0:
            raise PruneError(f"{where}: x_{kind} has {len(x)} samples and y_{kind} {len(y)}; "
                             "they must match and not be empty")
        if y.min() < 0:
            raise PruneError(f"{where}: y_{kind} has negative labels; use classes 0..C-1")
        if x.shape[1:] != arrays["x_train"].shape[1:]:
            raise PruneError(f"{where}: x_{kind} samples are {x.shape[1:]}, "
                             f"x_train's {arrays['x_train'].shape[1:]}; they must match")
    y = arrays.get("y_train")
    if y is not None and y.min() == y.max():  # one class: training would "learn" it at 100 %, silently
        raise PruneError(f"{where}: y_train holds one class only (label {y.min()}); a classifier needs two at least")
    return arrays


def from_folder(path, image_size: int = IMAGE_SIZE) -> Dataset:
    """A Dataset from image files: PATH/<class>/<image>, classes numbered in sorted name order
    (as torchvision's ImageFolder). PATH may instead hold train/ (and val/, test/) folders of
    that layout. Images are resized to image_size x image_size; all grayscale gives 1 channel,
    anything else 3 (RGB, alpha dropped)."""
    root = Path(path)
    if not root.is_dir():
        raise PruneError(f"no folder at {root}; give folder:PATH with one subfolder of images per class")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise PruneError(f"image_size must be a positive integer, got {image_size!r}")
    top = {d.name: d for d in _subfolders(root)}
    # train/ (with val/, test/) holding class folders, or the class folders themselves
    split_dirs = top if "train" in top and set(top) <= {"train", "val", "test"} else {"train": root}
    classes = [d.name for d in _subfolders(split_dirs["train"])]
    if not classes:
        raise PruneError(f"{split_dirs['train']} has no class subfolders; put each class's images "
                         "in a subfolder named after it")
    arrays = {}
    for kind, folder in split_dirs.items():
        arrays[f"x_{kind}"], arrays[f"y_{kind}"] = _read_images(folder, classes, image_size)
    arrays = carve(check_arrays(arrays, str(root)), str(root))  # refuses one class (one folder, or one with images)
    log.info("%s: %d classes (%s)", root, len(classes), ", ".join(classes[:10]))
    return to_dataset(content_name("folder", root.name, arrays), arrays, num_classes=len(classes))


def _subfolders(folder):
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _read_images(folder, classes, size):
    extra = sorted({d.name for d in _subfolders(folder)} - set(classes))
    if extra:
        raise PruneError(f"{folder} has class folders {extra} that train lacks; use train's classes")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(f for f in (folder / name).glob("*")
                       if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        files += found
        labels += [label] * len(found)
    if not files:
        raise PruneError(f"{folder} has no images ({', '.join(IMAGE_EXTENSIONS)}) in its class subfolders")
    return _stacked([_read_image(f, size) for f in files]), np.asarray(labels, np.int64)


def image_pixels(images, size: int, where: str) -> np.ndarray:
    """PIL images as one uint8 array, each resized to size x size (see _stacked)."""
    from PIL import Image
    try:
        return _stacked([_pixels(im, size) for im in images])
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PruneError(f"cannot read an image of {where} ({exc})") from None


def _stacked(images) -> np.ndarray:
    """(N, H, W) where every image was grayscale (one channel), else (N, 3, H, W)."""
    if all(gray for _, gray in images):
        return np.ascontiguousarray(np.stack([im[..., 0] for im, _ in images]))
    return np.ascontiguousarray(np.stack([im for im, _ in images]).transpose(0, 3, 1, 2))


def _pixels(im, size):
    """(H, W, 3) uint8 pixels of a PIL image and whether it was grayscale."""
    from PIL import Image
    gray = im.mode in ("1", "L")
    return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), np.uint8), gray


def _read_image(path, size):
    from PIL import Image
    try:
        with Image.open(path) as im:
            return _pixels(im, size)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise PruneError(f"cannot read image {path} ({exc}); remove or replace it") from None
