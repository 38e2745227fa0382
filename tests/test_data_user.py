"""A user's own data: torch Datasets/DataLoaders, npz:FILE and folder:PATH load into the same
Dataset structure; missing splits are carved deterministically; bad input is one line."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from prunekit import data
from prunekit.cli import main
from prunekit.errors import PruneError


def _arrays(n=40, shape=(6, 6), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n,) + shape, np.uint8), np.arange(n) % classes


def _rows(split):  # each sample as bytes: to compare splits as sets
    return {x.numpy().tobytes() for x in split.x}


# ---- npz:FILE ----------------------------------------------------------------------------

def test_npz_with_every_split_round_trips(tmp_path):
    x, y = _arrays()
    np.savez(tmp_path / "d.npz", x_train=x[:30], y_train=y[:30], x_val=x[30:35], y_val=y[30:35],
             x_test=x[35:], y_test=y[35:], notes=np.zeros(2))  # an extra array is ignored
    ds = data.load(f"npz:{tmp_path / 'd.npz'}")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 5, 5)
    assert torch.equal(ds.train.x, torch.from_numpy(x[:30, None] / 255).float())  # uint8 -> [0, 1]
    assert ds.test.y.tolist() == y[35:].tolist() and ds.test.y.dtype == torch.int64
    assert ds.input_shape == (1, 6, 6) and ds.num_classes == 4
    assert "/" not in ds.name and ds.name.startswith("npz-d-")


def test_npz_missing_splits_are_carved_deterministically(tmp_path):
    x, y = _arrays(n=50)
    x = x.reshape(50, -1).astype(np.float32)  # features, not images: kept as they are
    np.savez(tmp_path / "t.npz", x_train=x, y_train=y)
    a, b = data.load(f"npz:{tmp_path / 't.npz'}"), data.load(f"npz:{tmp_path / 't.npz'}")
    assert (len(a.train), len(a.val), len(a.test)) == (40, 5, 5)  # 10 % each for val and test
    for one, two in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(one.x, two.x) and torch.equal(one.y, two.y)
    parts = [_rows(a.train), _rows(a.val), _rows(a.test)]
    assert set.union(*parts) == {row.tobytes() for row in x}  # each sample in exactly one split
    assert sum(map(len, parts)) == 50
    assert a.val.y.tolist() != y[40:45].tolist() or a.test.y.tolist() != y[45:].tolist()  # shuffled
    assert a.input_shape == (36,) and a.train.x.dtype == torch.float32


def test_npz_content_changes_the_name(tmp_path):
    x, y = _arrays()
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    first = data.load(f"npz:{tmp_path / 'd.npz'}").name
    np.savez(tmp_path / "d.npz", x_train=x[::-1], y_train=y[::-1])
    assert data.load(f"npz:{tmp_path / 'd.npz'}").name != first  # a cache keyed on it is not reused


def _bad_npz(tmp_path, kind):
    path = tmp_path / "bad.npz"
    x, y = _arrays()
    if kind == "missing":
        return tmp_path / "absent.npz"
    if kind == "garbage":
        path.write_bytes(b"just some text\n")
    elif kind == "truncated":
        np.savez(path, x_train=x, y_train=y)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "npy":
        np.save(tmp_path / "bad.npy", x)
        (tmp_path / "bad.npy").rename(path)
    elif kind == "keys":
        np.savez(path, images=x, labels=y)
    elif kind == "pickle":
        np.savez(path, x_train=np.array([{"a": 1}] * 40, dtype=object), y_train=y)
    elif kind == "lengths":
        np.savez(path, x_train=x, y_train=y[:-1])
    elif kind == "float labels":
        np.savez(path, x_train=x, y_train=y.astype(np.float32))
    elif kind == "half a split":
        np.savez(path, x_train=x, y_train=y, x_val=x[:4])
    elif kind == "shapes":
        np.savez(path, x_train=x, y_train=y, x_test=x[:4, :3], y_test=y[:4])
    return path


BAD_NPZ = {"missing": "no .npz file at", "garbage": "is not an .npz file", "truncated": "damaged .npz",
           "npy": "is a single .npy array", "keys": r"has arrays \['images', 'labels'\]; it must hold arrays x_train",
           "pickle": "holds pickled objects", "lengths": "x_train has 40 samples and y_train 39",
           "float labels": "y_train must be integer class labels", "half a split": "x_val and y_val go together",
           "shapes": "x_test samples are"}


@pytest.mark.parametrize("kind", BAD_NPZ)
def test_bad_npz_is_one_clear_line(tmp_path, kind):
    path = _bad_npz(tmp_path, kind)
    with pytest.raises(PruneError, match=BAD_NPZ[kind]) as err:
        data.load(f"npz:{path}")
    assert "\n" not in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("kind", ["garbage", "pickle", "keys"])
def test_bad_npz_in_the_cli_is_exit_2(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    path = _bad_npz(tmp_path, kind)
    assert main(["compare", "--dataset", f"npz:{path}", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(path) in err
    assert not (tmp_path / "o").exists()


# ---- folder:PATH -------------------------------------------------------------------------

def _image_folder(root, modes=("RGB", "L"), per_class=5, classes=("cat", "ant", "bee")):
    from PIL import Image
    rng = np.random.default_rng(1)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            mode = modes[i % len(modes)]
            size = (10 + i, 7 + 2 * i)  # every image a different size
            pixels = rng.integers(0, 256, (size[1], size[0], 3) if mode == "RGB" else size[::-1], np.uint8)
            Image.fromarray(pixels, mode).save(root / name / f"{i}.png")
        (root / name / "notes.txt").write_text("not an image: skipped")
    return root


def test_folder_of_mixed_images_is_rgb_at_the_chosen_size(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    ds = data.load(f"folder:{root}", image_size=8)
    assert ds.input_shape == (3, 8, 8) and ds.num_classes == 3
    assert (len(ds.train), len(ds.val), len(ds.test)) == (13, 1, 1)
    labels = torch.cat([ds.train.y, ds.val.y, ds.test.y]).sort().values
    assert labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5  # ant, bee, cat: sorted names
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == torch.float32 and 0 <= split.x.min() and split.x.max() <= 1
    assert data.load(f"folder:{root}").input_shape == (3, 32, 32)  # the documented default


def test_folder_of_grayscale_images_is_one_channel_and_split_folders_are_kept(tmp_path):
    root = tmp_path / "gray"
    _image_folder(root / "train", modes=("L",), per_class=4, classes=("a", "b"))
    _image_folder(root / "test", modes=("L",), per_class=2, classes=("a", "b"))
    ds = data.load(f"folder:{root}", image_size=5)
    assert ds.input_shape == (1, 5, 5)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (7, 1, 4)  # val carved from train only
    assert ds.test.y.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("kind, message", [
    ("missing", "no folder at"), ("empty", "has no class subfolders"),
    ("no images", "has no images"), ("corrupt", r"cannot read image .*broken.png")])
def test_bad_folder_is_one_clear_line(tmp_path, kind, message):
    root = tmp_path / "imgs"
    if kind == "empty":
        root.mkdir()
    elif kind == "no images":
        (root / "a").mkdir(parents=True)
        (root / "a" / "readme.txt").write_text("hi")
    elif kind == "corrupt":
        _image_folder(root)
        (root / "ant" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(PruneError, match=message) as err:
        data.load(f"folder:{root}")
    assert "\n" not in str(err.value)


def test_cli_evaluate_reads_a_folder_and_refuses_a_missing_one(tmp_path, monkeypatch, capsys):
    from prunekit import save, zoo
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    root = _image_folder(tmp_path / "imgs")
    model = save(zoo.build("lenet300", in_features=3 * 8 * 8, num_classes=3), tmp_path / "m.safetensors")
    assert main(["evaluate", str(model), "--dataset", f"folder:{root}", "--image-size", "8",
                 "--json", str(tmp_path / "m.json"), "--quiet"]) == 0
    assert 0 <= json.loads((tmp_path / "m.json").read_text())["accuracy"] <= 1
    assert main(["evaluate", str(model), "--dataset", f"folder:{tmp_path / 'nope'}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunekit: error: no folder at") and len(err.splitlines()) == 1


# ---- torch Dataset / DataLoader ----------------------------------------------------------

def _tensors(n=60, features=5):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, features, generator=gen), torch.arange(n) % 3


def test_torch_dataset_and_loader_give_the_same_dataset():
    x, y = _tensors()
    from_ds = data.load(TensorDataset(x, y))
    from_loader = data.from_torch(DataLoader(TensorDataset(x, y), batch_size=7))
    assert (len(from_ds.train), len(from_ds.val), len(from_ds.test)) == (48, 6, 6)
    for a, b in ((from_ds.train, from_loader.train), (from_ds.test, from_loader.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert from_ds.name == from_loader.name and from_ds.num_classes == 3
    assert set.union(_rows(from_ds.train), _rows(from_ds.val), _rows(from_ds.test)) == \
        {row.numpy().tobytes() for row in x}


def test_torch_splits_given_are_used_as_they_are_and_fit_runs_on_them():
    from prunekit import zoo
    from prunekit.train.loop import FitConfig, evaluate, fit
    x, y = _tensors()
    ds = data.from_torch(TensorDataset(x[:40], y[:40]), val=TensorDataset(x[40:50], y[40:50]),
                         test=TensorDataset(x[50:], y[50:]), name="mine")
    assert ds.name == "mine" and torch.equal(ds.val.x, x[40:50]) and torch.equal(ds.test.y, y[50:])
    model = zoo.build("lenet300", in_features=5, num_classes=3)
    result = fit(model, ds, FitConfig(epochs=1, batch_size=16), quiet=True)
    assert 0 <= result.best_val <= 1 and 0 <= evaluate(model, ds.test) <= 1


def test_torch_data_that_is_not_input_label_pairs_is_one_line():
    from PIL import Image

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return Image.new("RGB", (4, 4)), i % 2
    with pytest.raises(PruneError, match="cannot batch the train data .*ToTensor"):
        data.from_torch(Photos())
    with pytest.raises(PruneError, match=r"must yield \(input, label\) pairs"):
        data.from_torch(TensorDataset(torch.zeros(4, 2)))
    with pytest.raises(PruneError, match="y_train must be integer class labels"):
        data.from_torch(TensorDataset(torch.zeros(20, 2), torch.zeros(20)))


def test_cli_compare_runs_on_an_npz(tmp_path, monkeypatch):
    """The main job on the user's own arrays; the dense model's cache is named by content."""
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    x, y = _arrays(n=200, shape=(8, 8))
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y)
    assert main(["compare", "--dataset", f"npz:{tmp_path / 'mine.npz'}", "--epochs", "1",
                 "--methods", "magnitude-global", "--sparsities", "0.5", "--out", str(tmp_path / "o"),
                 "--json", str(tmp_path / "c.json"), "--quiet"]) == 0
    result = json.loads((tmp_path / "c.json").read_text())
    assert [r["method"] for r in result["runs"]] == ["magnitude-global"]
    assert result["runs"][0]["compression_ratio"] == pytest.approx(2.0, rel=0.01)
    cached = sorted(p.name for p in (tmp_path / "home" / "models").iterdir())
    # the dense model and, beside it, its initial weights (the lottery methods rewind to them)
    assert len(cached) == 2 and all(name.startswith("lenet300-npz-mine-") for name in cached)
    assert cached[0].endswith(".initial.safetensors")


def test_something_else_is_refused_in_one_line():
    with pytest.raises(PruneError, match="^cannot load a dict: give a dataset name, npz:FILE"):
        data.load({"x": [1, 2], "y": [0, 1]})


# ---- hf:DIR (a Hugging Face dataset saved to disk) -----------------------------------------

def test_hugging_face_image_dataset_on_disk_loads_with_its_splits_and_classes(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image
    rng = np.random.default_rng(0)

    def split(n):
        images = [Image.fromarray(rng.integers(0, 256, (6 + i % 3, 9, 3), np.uint8)) for i in range(n)]
        return datasets.Dataset.from_dict(
            {"img": images, "label": [i % 4 for i in range(n)]},
            features=datasets.Features({"img": datasets.Image(),
                                        "label": datasets.ClassLabel(names=["a", "b", "c", "d"])}))
    datasets.DatasetDict({"train": split(12), "test": split(4)}).save_to_disk(str(tmp_path / "ds"))
    ds = data.load(f"hf:{tmp_path / 'ds'}", image_size=8)
    assert ds.input_shape == (3, 8, 8) and ds.num_classes == 4
    assert (len(ds.train), len(ds.val), len(ds.test)) == (11, 1, 4)  # val carved from train
    assert ds.test.y.tolist() == [0, 1, 2, 3]


def test_hugging_face_array_dataset_and_bad_ones_are_one_line(tmp_path):
    datasets = pytest.importorskip("datasets")
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    datasets.Dataset.from_dict({"x": x, "y": [0, 1] * 5}).save_to_disk(str(tmp_path / "arrays"))
    ds = data.load(f"hf:{tmp_path / 'arrays'}")
    assert ds.input_shape == (4,) and ds.num_classes == 2
    datasets.Dataset.from_dict({"text": ["a", "b"], "score": [1, 2]}).save_to_disk(str(tmp_path / "text"))
    (tmp_path / "not-a-dataset").mkdir()
    for name, message in (("text", "needs inputs"), ("not-a-dataset", "cannot read"), ("missing", "no folder")):
        with pytest.raises(PruneError, match=message) as err:
            data.load(f"hf:{tmp_path / name}")
        assert "\n" not in str(err.value)
