"""Models named by source (torchvision:, timm:, hf:, a pk.save file, a pickled model) and their
weights files: built offline, rebuilt by pk.load from the file alone, bad files refused in one
line with the model untouched."""
import pytest
import torch
from safetensors.torch import save_file

import prunekit as pk
from prunekit.serialization.sources import load_model, load_weights
from prunekit.zoo import sources


def test_torchvision_model_is_built_for_the_data_and_rebuilt_by_load(tmp_path):
    model = load_model("torchvision:resnet18", num_classes=3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    pk.prune_magnitude(model, 0.5)
    path = pk.save(model, tmp_path / "r.safetensors", format="compressed")
    again = pk.load(path)  # no model= needed: the source is in the file
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(again.eval()(x), model.eval()(x))


def test_timm_model_adapts_to_one_channel_and_structured_pruning_round_trips(tmp_path):
    model = load_model("timm:resnet10t", num_classes=4, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    pk.prune_structured(model, x, ratio=0.3)
    again = pk.load(pk.save(model, tmp_path / "t.safetensors")).eval()
    torch.testing.assert_close(again(x), model(x))


def test_unknown_names_suggest_close_ones():
    with pytest.raises(pk.PruneError, match="did you mean resnet18"):
        load_model("torchvision:resnet81")
    with pytest.raises(pk.PruneError, match="unknown model 'nosuch'"):
        load_model("nosuch")
    with pytest.raises(pk.PruneError, match="3-channel"):
        load_model("torchvision:resnet18", in_chans=1)


def test_hugging_face_classifier_folder_maps_inputs_to_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, num_labels=5)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    model = load_model(f"hf:{tmp_path / 'vit'}", num_classes=5)
    assert isinstance(model, sources.Logits)
    assert model(torch.randn(3, 3, 16, 16)).shape == (3, 5)
    with pytest.raises(pk.PruneError, match="5 labels, the data 7"):
        load_model(f"hf:{tmp_path / 'vit'}", num_classes=7)


def test_weights_from_safetensors_a_state_dict_and_a_ddp_checkpoint(tmp_path):
    source = load_model("lenet300", in_features=16, num_classes=3, hidden=(8, 4))
    state = {k: v.clone() for k, v in source.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ckpt.pt")
    for name in ("w.safetensors", "w.pt", "ckpt.pt"):
        model = load_model("lenet300", weights=tmp_path / name, in_features=16, num_classes=3, hidden=(8, 4))
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items()), name


def test_a_pickle_is_loaded_only_when_trusted(tmp_path):
    model = load_model("lenet300", in_features=16, num_classes=3, hidden=(8, 4))
    torch.save(model, tmp_path / "whole.pt")  # a pickled module: reading it runs code
    with pytest.raises(pk.PruneError, match="--trust-pickle"):
        load_model(str(tmp_path / "whole.pt"))
    loaded = load_model(str(tmp_path / "whole.pt"), trust_pickle=True)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_bad_weights_files_are_one_line_and_leave_the_model_as_it_was(tmp_path):
    model = load_model("lenet300", in_features=16, num_classes=3, hidden=(8, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    other = load_model("lenet300", in_features=16, num_classes=3, hidden=(9, 4))
    save_file(other.state_dict(), tmp_path / "other.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "other.safetensors").read_bytes()[:100])
    torch.save(model.state_dict(), tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:200])
    cases = {"other.safetensors": "does not fit the model", "cut.safetensors": "not a valid safetensors",
             "cut.pt": "not a complete torch file", "missing.pt": "no weights file"}
    for name, message in cases.items():
        with pytest.raises(pk.PruneError, match=message):
            load_weights(model, tmp_path / name)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
