"""The CLI on a user's own model and data: torchvision/timm names, a weights file, a pk.save
file, an image folder; pretrained models skip dense training; bad ones are one line, exit 2."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from prunekit.cli import main
from prunekit.serialization.sources import load_model


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    return tmp_path


def _folder(root, classes=("ant", "bee", "cat"), per_class=10):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):  # each class its own brightness: learnable in an epoch or two
            pixels = np.clip(rng.normal(50 + 70 * c, 30, (12, 14, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_compare_trains_a_torchvision_model_on_an_image_folder(home):
    data = _folder(home / "imgs")
    code = main(["compare", "--model", "torchvision:resnet18", "--dataset", f"folder:{data}", "--image-size", "16",
                 "--methods", "magnitude-global,structured", "--sparsities", "0.5", "--epochs", "1",
                 "--finetune-epochs", "1", "--out", str(home / "run"), "--json", str(home / "c.json"), "--quiet"])
    assert code == 0
    result = json.loads((home / "c.json").read_text())
    assert result["baseline"]["model"] == "ResNet" and result["config"]["model"] == "torchvision:resnet18"
    assert [r["method"] for r in result["runs"]] == ["magnitude-global", "structured"]
    assert result["runs"][1]["params"] < 0.6 * result["baseline"]["params"]  # half the channels went
    assert (home / "run" / "report.html").is_file()


def test_a_pretrained_model_is_the_dense_model_as_it_is(home, capsys):
    """With --weights there is no dense training: the baseline's accuracy is the weights' own."""
    data = _folder(home / "imgs")
    model = load_model("timm:resnet10t", num_classes=3, in_chans=3)
    save_file(model.state_dict(), home / "w.safetensors")
    code = main(["compare", "--model", "timm:resnet10t", "--weights", str(home / "w.safetensors"),
                 "--dataset", f"folder:{data}", "--image-size", "16", "--methods", "magnitude-global",
                 "--sparsities", "0.5", "--finetune-epochs", "0", "--out", str(home / "run"),
                 "--json", str(home / "c.json"), "--quiet"])
    assert code == 0
    assert not (home / "home" / "models").exists()  # nothing trained, nothing cached
    assert not list((home / "run").glob("checkpoints/*/dense"))
    result = json.loads((home / "c.json").read_text())
    assert result["runs"][0]["compression_ratio"] == pytest.approx(2.0, rel=0.01)


def test_prune_evaluate_and_bench_take_a_model_name_with_weights(home, capsys):
    data = _folder(home / "imgs")
    model = load_model("timm:resnet10t", num_classes=3, in_chans=3)
    torch.save(model.state_dict(), home / "w.pt")
    common = ["--weights", str(home / "w.pt"), "--dataset", f"folder:{data}", "--image-size", "16"]
    assert main(["prune", "timm:resnet10t", str(home / "p.safetensors"), "--sparsity", "0.5", *common]) == 0
    assert main(["evaluate", str(home / "p.safetensors"), "--dataset", f"folder:{data}", "--image-size", "16",
                 "--json", str(home / "e.json")]) == 0
    assert json.loads((home / "e.json").read_text())["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert main(["bench", str(home / "p.safetensors"), "--input-shape", "3,16,16", "--batches", "1",
                 "--threads", "1", "--forms", "pruned", "--repeats", "3"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["compare", "--model", "torchvision:resnet81", "--dataset", "digits"], "did you mean resnet18"),
    (["compare", "--model", "nosuch", "--dataset", "digits"], "unknown model 'nosuch'"),
    (["evaluate", "timm:resnet10t", "--weights", "missing.safetensors", "--dataset", "digits"], "no weights file"),
    (["compare", "--model", "torchvision:resnet18", "--dataset", "digits"], "3-channel"),
])
def test_bad_model_sources_are_one_line_and_exit_2(home, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
