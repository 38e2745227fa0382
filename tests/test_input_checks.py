"""Bad input is refused where it is read, as one PruneError line (exit 2 on the CLI) that names
the thing and the cause, with the model and the files left as they were: a damaged Hugging Face
folder, labels the model has no output for, one-class data, a FitConfig the loop cannot run, a
text file given as weights, token ids beyond the vocabulary, an export shape the model cannot take."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

import prunekit as pk
from prunekit import data, llm
from prunekit.cli import main
from prunekit.cli.export import check_input_shape
from prunekit.data.split import Dataset, Split
from prunekit.errors import PruneError
from prunekit.measure.accuracy import top1
from prunekit.serialization.sources import load_model, load_weights
from prunekit.train.loop import FitConfig, evaluate, fit, steps_per_epoch

sys.path.insert(0, str(Path(__file__).parent))
from llm_helpers import VOCAB, tiny_llama  # noqa: E402


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _files(folder) -> dict:
    """Every file under `folder` and its bytes: to show a refused call changed none."""
    return {p: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


def _state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, state) -> bool:
    return model.state_dict().keys() == state.keys() and all(torch.equal(model.state_dict()[k], v)
                                                             for k, v in state.items())


def _npz(path, labels, n=40, features=6):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((n, features)).astype(np.float32), y_train=np.asarray(labels, np.int64))
    return f"npz:{path}"


def _mlp(classes, features=6):
    return load_model("lenet300", in_features=features, num_classes=classes, hidden=(8,))


# ---- 1. a damaged Hugging Face model folder ------------------------------------------------

def _cut_config(d):
    text = (d / "config.json").read_text()
    (d / "config.json").write_text(text[:len(text) // 2])


def _cut_weights(d):
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:len(weights.read_bytes()) // 2])


DAMAGE = {
    "cut-off config.json": (_cut_config, "not a valid JSON file"),
    "config.json of a list": (lambda d: (d / "config.json").write_text('["vit"]'), "model_type"),
    "a field of the wrong type": (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "hidden_size": "big"})), "hidden_size"),
    "no weights file": (lambda d: (d / "model.safetensors").unlink(), "no file named model.safetensors"),
    "cut-off weights": (_cut_weights, "deserializing header"),
}


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    """A tiny ViT classifier (3 classes, 1-channel 8x8 images) saved with save_pretrained."""
    root = tmp_path_factory.mktemp("hf")
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(root / "vit")
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", x_train=rng.random((30, 1, 8, 8)).astype(np.float32), y_train=np.arange(30) % 3)
    return root


def _damaged(vit_folder, tmp_path, damage):
    folder = tmp_path / "model"
    shutil.copytree(vit_folder / "vit", folder)
    DAMAGE[damage][0](folder)
    return folder


def test_the_intact_folder_loads(vit_folder):  # the checks below refuse the damage, not the folder
    assert load_model(f"hf:{vit_folder / 'vit'}", num_classes=3)(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_hf_folder_is_one_line_naming_it(vit_folder, tmp_path, damage):
    folder = _damaged(vit_folder, tmp_path, damage)
    with pytest.raises(PruneError, match=DAMAGE[damage][1]) as err:
        load_model(f"hf:{folder}", num_classes=3)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["cut-off config.json", "no weights file", "cut-off weights"])
def test_evaluate_prune_and_llm_prune_refuse_a_damaged_hf_folder(vit_folder, tmp_path, capsys, damage):
    folder = _damaged(vit_folder, tmp_path, damage)
    before, dataset = _files(folder), f"npz:{vit_folder / 'd.npz'}"
    (tmp_path / "calib.txt").write_text("some calibration text " * 50)
    for argv in (["evaluate", f"hf:{folder}", "--dataset", dataset, "--json", str(tmp_path / "e.json")],
                 ["prune", f"hf:{folder}", str(tmp_path / "p.safetensors"), "--sparsity", "0.5", "--dataset", dataset],
                 ["llm", "prune", "--model", str(folder), "--out", str(tmp_path / "out"),
                  "--calibration", str(tmp_path / "calib.txt")]):
        assert main([*argv, "--quiet"]) == 2, argv
        err = _one_line(capsys)
        assert str(folder) in err and DAMAGE[damage][1] in err, err
    assert _files(folder) == before
    assert not any((tmp_path / name).exists() for name in ("e.json", "p.safetensors", "out"))


def test_llm_load_refuses_a_folder_without_a_tokenizer(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "m")
    with pytest.raises(PruneError, match="cannot read it as a Hugging Face model folder") as err:
        llm.load(tmp_path / "m")
    assert str(tmp_path / "m") in str(err.value)


# ---- 2. labels the model has no output for -------------------------------------------------

def test_fit_refuses_labels_beyond_the_outputs_before_any_step(tmp_path):
    dataset = data.load(_npz(tmp_path / "d.npz", np.arange(40) % 5))
    model = _mlp(3).train()
    next(iter(model.children())).eval()  # a module the user froze keeps its own flag
    state, flags = _state(model), [m.training for m in model.modules()]
    with pytest.raises(PruneError, match=r"training data has labels 0\.\.4, but the model has 3 outputs"):
        fit(model, dataset, FitConfig(epochs=1, batch_size=8), quiet=True)
    assert _same(model, state) and [m.training for m in model.modules()] == flags
    assert fit(_mlp(5), dataset, FitConfig(epochs=1, batch_size=8), quiet=True).best_epoch == 1  # they fit 5


def test_evaluate_refuses_labels_beyond_the_outputs_in_any_batch():
    split = Split(torch.zeros(12, 6), torch.tensor([0, 1, 2] * 3 + [0, 1, 3]))  # the bad label in the last batch
    with pytest.raises(PruneError, match=r"evaluation data has labels 0\.\.3, but the model has 3 outputs"):
        evaluate(_mlp(3), split, batch_size=4)
    with pytest.raises(PruneError, match="labels -1..2"):
        evaluate(_mlp(3), Split(torch.zeros(3, 6), torch.tensor([0, -1, 2])))
    assert evaluate(_mlp(4), split, batch_size=4) >= 0  # every label has an output


def test_top1_refuses_labels_beyond_the_outputs():
    batches = [(torch.zeros(2, 6), torch.tensor([0, 1])), (torch.zeros(2, 6), torch.tensor([2, 7]))]
    with pytest.raises(PruneError, match=r"labels 2\.\.7 in the data, but the model has 3 outputs"):
        top1(_mlp(3), batches)


def test_cli_finetune_and_evaluate_refuse_labels_the_model_lacks(tmp_path, capsys):
    dataset = _npz(tmp_path / "d.npz", np.arange(40) % 5)
    saved = pk.save(_mlp(3), tmp_path / "m.safetensors")
    before = _files(tmp_path)
    assert main(["finetune", str(saved), str(tmp_path / "out.safetensors"), "--dataset", dataset, "--epochs", "1",
                 "--quiet"]) == 2
    assert "but the model has 3 outputs" in _one_line(capsys)
    assert main(["evaluate", str(saved), "--dataset", dataset, "--json", str(tmp_path / "e.json"), "--quiet"]) == 2
    assert "but the model has 3 outputs" in _one_line(capsys)
    assert _files(tmp_path) == before  # nothing written, nothing changed


# ---- 3. fewer than two classes -------------------------------------------------------------

def test_one_class_data_is_refused_where_it_is_read(tmp_path):
    with pytest.raises(PruneError, match=r"y_train holds one class only \(label 2\)"):
        data.load(_npz(tmp_path / "one.npz", np.full(40, 2)))
    with pytest.raises(PruneError, match="one class only"):
        data.from_torch(TensorDataset(torch.zeros(20, 3), torch.zeros(20, dtype=torch.long)))
    from PIL import Image
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    for i in range(12):
        Image.new("L", (4, 4), color=i * 20).save(tmp_path / "imgs" / "cat" / f"{i}.png")
    with pytest.raises(PruneError, match="one class only"):
        data.load(f"folder:{tmp_path / 'imgs'}")
    assert data.load(_npz(tmp_path / "two.npz", np.arange(40) % 2)).num_classes == 2


def test_fit_refuses_a_one_class_dataset_built_by_hand():
    split = Split(torch.randn(16, 6), torch.zeros(16, dtype=torch.long))
    model = _mlp(2)
    state = _state(model)
    with pytest.raises(PruneError, match=r"training data holds one class only \(label 0\)"):
        fit(model, Dataset("one", split, split, split, 1, (6,)), FitConfig(epochs=1, batch_size=8), quiet=True)
    assert _same(model, state)


# ---- 4. a FitConfig the loop cannot run ----------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("batch_size", 2.5), ("epochs", -1), ("lr", -0.1), ("lr", float("nan")),
    ("momentum", 1.5), ("weight_decay", -1.0), ("patience", -2), ("limit", -1), ("temperature", 0.0),
    ("distill", 2.0), ("seed", "0"),
])
def test_fit_refuses_a_bad_config_naming_the_field(field, value):
    split = Split(torch.randn(16, 6), torch.arange(16) % 3)
    model = _mlp(3)
    state = _state(model)
    with pytest.raises(PruneError, match=f"FitConfig.{field} must be"):
        fit(model, Dataset("d", split, split, split, 3, (6,)), FitConfig(**{"epochs": 1, field: value}), quiet=True)
    assert _same(model, state)


def test_a_schedule_sized_with_batch_size_zero_is_refused_and_zero_epochs_is_no_training():
    split = Split(torch.randn(16, 6), torch.arange(16) % 3)
    dataset = Dataset("d", split, split, split, 3, (6,))
    with pytest.raises(PruneError, match="FitConfig.batch_size must be an integer >= 1, got 0"):
        steps_per_epoch(dataset, FitConfig(batch_size=0))
    model = _mlp(3)
    state = _state(model)
    assert fit(model, dataset, FitConfig(epochs=0), quiet=True).history == []  # a fine-tune budget of zero
    assert _same(model, state)


# ---- 5. a file that is not weights ---------------------------------------------------------

@pytest.mark.parametrize("name, content, message", [
    ("notes.txt", b"hello world\nthis is text\n", "not a torch file"),
    ("w.pt", b"x,y\n1,2\n", "not a torch file"),
    ("w.pth", b'{"weights": [1, 2]}', "not a torch file"),
    ("w.bin", b"", "the file is empty"),
    ("w.safetensors", b"hello world", "not a valid safetensors file"),
])
def test_a_file_that_is_not_weights_is_one_line_naming_it(tmp_path, capsys, name, content, message):
    (tmp_path / name).write_bytes(content)
    model = _mlp(3)
    state = _state(model)
    with pytest.raises(PruneError, match=message) as err:
        load_weights(model, tmp_path / name)
    assert str(tmp_path / name) in str(err.value) and "--trust-pickle" not in str(err.value)
    assert _same(model, state)
    dataset = _npz(tmp_path / "d.npz", np.arange(40) % 3)
    assert main(["evaluate", "lenet300", "--weights", str(tmp_path / name), "--dataset", dataset, "--quiet"]) == 2
    assert str(tmp_path / name) in _one_line(capsys)


def test_torch_files_of_both_formats_still_load(tmp_path):
    source = _mlp(3)
    torch.save(source.state_dict(), tmp_path / "zip.pt")
    torch.save(source.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    for name in ("zip.pt", "legacy.pt", "w.safetensors"):
        assert _same(load_weights(_mlp(3), tmp_path / name), source.state_dict()), name
    torch.save(source, tmp_path / "whole.pt")  # a real pickle is still told apart: it needs --trust-pickle
    with pytest.raises(PruneError, match="--trust-pickle"):
        load_weights(_mlp(3), tmp_path / "whole.pt")


# ---- 6. token ids beyond the vocabulary ----------------------------------------------------

BAD_IDS = {"beyond": torch.full((2, 8), VOCAB), "negative": torch.tensor([[1, 2, -1, 3]] * 2)}


@pytest.mark.parametrize("kind", BAD_IDS)
def test_llm_prune_and_prune_structured_refuse_ids_beyond_the_vocabulary(kind):
    model = tiny_llama()
    state = _state(model)
    batches = BAD_IDS[kind]
    low, high = int(batches.min()), int(batches.max())
    pattern = rf"token ids {low}\.\.{high}, but LlamaForCausalLM's vocabulary has {VOCAB}"
    with pytest.raises(PruneError, match=pattern):
        llm.prune(model, batches, sparsity=0.5)
    with pytest.raises(PruneError, match=pattern):
        llm.prune_structured(model, batches, ffn=0.25)
    assert _same(model, state) and model.config.intermediate_size == 128
    llm.prune(model, batches.clamp(0, VOCAB - 1), sparsity=0.5)  # the same batches within the vocabulary run


def test_prune_sharded_refuses_ids_beyond_the_vocabulary_before_writing(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "in")
    before = _files(tmp_path / "in")
    with pytest.raises(PruneError, match="vocabulary has 256"):
        llm.prune_sharded(tmp_path / "in", tmp_path / "out", BAD_IDS["beyond"])
    assert _files(tmp_path / "in") == before and not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


class _WideTokenizer:
    """A tokenizer of a larger vocabulary than the model's: ids up to 2 * VOCAB."""
    bos_token_id = None

    def __call__(self, text, **kwargs):
        return {"input_ids": torch.arange(len(text.split())).unsqueeze(0) * 2 % (2 * VOCAB)}


def test_perplexity_refuses_a_tokenizer_beyond_the_vocabulary():
    with pytest.raises(PruneError, match=rf"tokenizer's ids hold token ids 0\.\.\d+, but .* has {VOCAB}"):
        llm.perplexity(tiny_llama(), _WideTokenizer(), "word " * 300, seq_len=16)


# ---- 7. an export shape the model cannot take ----------------------------------------------

def test_export_refuses_an_input_shape_the_model_cannot_take(tmp_path, capsys):
    saved = pk.save(_mlp(3), tmp_path / "m.safetensors")
    assert main(["export", str(saved), str(tmp_path / "m.onnx"), "--format", "onnx", "--input-shape", "1,28,28",
                 "--quiet"]) == 2
    err = _one_line(capsys)
    assert "--input-shape 1,28,28 does not fit the model" in err and "reads 6 features per sample" in err
    assert not (tmp_path / "m.onnx").exists()
    conv = pk.zoo.build("lenet5", in_channels=1, num_classes=3, image_size=28)
    with pytest.raises(PruneError, match=r"shape \[1, 3, 28, 28\] fails .*reads 1 input channels"):
        check_input_shape(conv, (3, 28, 28))


def test_a_shape_that_fits_passes_and_the_training_flag_is_kept():
    model = _mlp(3).train()
    check_input_shape(model, (6,))
    assert model.training
