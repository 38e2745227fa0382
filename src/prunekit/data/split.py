"""The in-memory shape every dataset takes: a Dataset of three Splits (train, val, test),
and the two deterministic ways a missing split is made."""
import hashlib
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from prunekit.errors import PruneError

KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
CARVE_FRACTION = 0.1  # of train, for each missing split (val, test)
CARVE_SEED = 0


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


def to_dataset(name, arrays, num_classes=None) -> Dataset:
    """A Dataset from numpy arrays under KEYS; num_classes defaults to the largest label + 1."""
    def split(kind):
        x = torch.from_numpy(np.ascontiguousarray(arrays[f"x_{kind}"]))
        # uint8 pixels are stored as-is in caches (4x smaller); scale them only here.
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if x.dim() == 3:  # (N, H, W) images get their channel axis
            x = x.unsqueeze(1)
        return Split(x, torch.from_numpy(np.asarray(arrays[f"y_{kind}"]).astype(np.int64)))
    train, val, test = split("train"), split("val"), split("test")
    if num_classes is None:
        num_classes = int(max(int(s.y.max()) for s in (train, val, test))) + 1
    return Dataset(name, train, val, test, num_classes, tuple(train.x.shape[1:]))


def holdout(x, y, n_val, x_test, y_test) -> dict:
    """Validation = the last n_val training samples: deterministic, no RNG involved."""
    cut = len(y) - n_val
    return {"x_train": x[:cut], "y_train": y[:cut], "x_val": x[cut:], "y_val": y[cut:],
            "x_test": x_test, "y_test": y_test}


def carve(arrays: dict, where: str) -> dict:
    """Fill a missing val and/or test split from train: CARVE_FRACTION of train each (at least
    one sample), chosen by a fixed permutation (seed CARVE_SEED), so the same data always splits
    the same way and sorted data (one class after another) still splits evenly."""
    missing = [kind for kind in ("val", "test") if arrays.get(f"x_{kind}") is None]
    if not missing:
        return arrays
    x, y = arrays["x_train"], arrays["y_train"]
    n = max(1, int(CARVE_FRACTION * len(y)))
    if len(y) < n * len(missing) + 1:
        raise PruneError(f"{where}: {len(y)} training samples are too few to carve "
                         f"{' and '.join(missing)} from; give at least {n * len(missing) + 1}")
    order = np.random.default_rng(CARVE_SEED).permutation(len(y))
    out = dict(arrays)
    for i, kind in enumerate(missing):
        idx = np.sort(order[i * n:(i + 1) * n])
        out[f"x_{kind}"], out[f"y_{kind}"] = x[idx], y[idx]
    keep = np.sort(order[n * len(missing):])  # sorted: train keeps its original order
    out["x_train"], out["y_train"] = x[keep], y[keep]
    return out


def content_name(kind: str, label: str, arrays: dict) -> str:
    """A file-name-safe dataset name that changes with the data: caches keyed on a name
    (compare's trained dense model) never mix two datasets that share a folder name."""
    digest = hashlib.sha1()
    for key in KEYS:
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}{value.shape}{value.dtype}".encode())
        digest.update(value.tobytes())
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._") or kind
    return f"{kind}-{safe}-{digest.hexdigest()[:10]}"
