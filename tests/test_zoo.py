"""Structured pruning across real architectures: torchvision, timm, Hugging Face.

Each model prunes, runs forward and backward, keeps its output shapes, and loses
parameters and MACs. The full torchvision sweep (every model, against Torch-Pruning) is
`benchmarks/structured_coverage.py`; this is a fast cross-section of every family.
"""
import os

import pytest
import timm
import torch
import torchvision
from torchvision.models import detection, segmentation

import prunekit as pk
from prunekit.graph.trace import tensors_of
from prunekit.measure.macs import layer_stats, totals

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")


def shapes(output):
    return [tuple(t.shape) for t in tensors_of(output)]


def macs(model, inputs):
    return totals(layer_stats(model, inputs))["macs"]


def prune_and_check(model, inputs, check_macs=True, **kwargs):
    model.eval()
    with torch.no_grad():
        before = shapes(model(*inputs))
    macs_before = macs(model, inputs) if check_macs else None
    result = pk.prune_structured(model, inputs, **kwargs)
    assert result.params_after < result.params_before
    with torch.no_grad():
        assert shapes(model(*inputs)) == before
    if check_macs:
        assert macs(model, inputs) < macs_before
    return result


def backward(model, inputs):
    model.train()
    out = model(*inputs)
    sum(t.float().sum() for t in tensors_of(out) if t.is_floating_point()).backward()
    assert any(p.grad is not None for p in model.parameters())


VISION = {  # name: (input size, ratio)
    "resnet18": (64, 0.3), "resnext50_32x4d": (64, 0.5), "mobilenet_v3_small": (64, 0.3),
    "efficientnet_b0": (64, 0.5), "shufflenet_v2_x0_5": (64, 0.3), "densenet121": (64, 0.5),
    "regnet_y_400mf": (64, 0.3), "convnext_tiny": (64, 0.5), "squeezenet1_0": (64, 0.3),
    "googlenet": (64, 0.5), "mnasnet0_5": (64, 0.3), "inception_v3": (96, 0.5), "swin_t": (64, 0.3),
    "vit_b_16": (224, 0.5),
}


@pytest.mark.parametrize("name", VISION)
def test_torchvision_classification(name):
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, num_classes=10, **kwargs)
    size, ratio = VISION[name]
    x = torch.randn(2, 3, size, size)
    prune_and_check(model, (x,), ratio=ratio)
    backward(model, (x,))


@pytest.mark.parametrize("build", [
    lambda: detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=5),
    lambda: detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5),
], ids=["fasterrcnn_mobilenet", "ssdlite"])
def test_torchvision_detection(build):
    torch.manual_seed(0)
    model = build()
    prune_and_check(model, ([torch.rand(3, 160, 160)],), ratio=0.3)


def test_torchvision_segmentation():
    model = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)
    x = torch.rand(1, 3, 96, 96)
    prune_and_check(model, (x,), ratio=0.5)
    backward(model, (x,))


TIMM = {"convnext_atto": 64, "efficientnet_b0": 64, "regnetx_002": 64, "mobilenetv3_small_050": 64,
        "resnet18": 64, "vit_tiny_patch16_224": 224, "deit_tiny_patch16_224": 224,
        "swin_tiny_patch4_window7_224": 224, "tf_efficientnet_lite0": 64}


@pytest.mark.parametrize("name", TIMM)
def test_timm(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, pretrained=False)
    x = torch.randn(1, 3, TIMM[name], TIMM[name])
    prune_and_check(model, (x,), ratio=0.5)
    backward(model, (x,))


def test_timm_vit_heads():
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=64)
    x = torch.randn(1, 3, 64, 64)
    prune_and_check(model, (x,), ratio=0.34, granularity="head")
    assert all(block.attn.num_heads == 2 for block in model.blocks)  # 3 heads -> 2
    assert all(block.attn.qkv.out_features == 3 * 2 * 64 for block in model.blocks)


def hf_models():
    t = transformers
    return {
        "bert": lambda: t.BertModel(t.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=128, vocab_size=100)),
        "gpt2": lambda: t.GPT2LMHeadModel(t.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100,
                                                       n_positions=32, bos_token_id=0, eos_token_id=0)),
        "llama_gqa": lambda: t.LlamaForCausalLM(t.LlamaConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=100)),
        "gemma3": lambda: t.Gemma3ForCausalLM(t.Gemma3TextConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=128, vocab_size=100)),
    }


# What each config can describe after pk.prune_structured (the rest is refused by default):
# Llama-style configs take the new widths and head counts; BERT's and GPT-2's derive the head
# size from hidden / heads; removed blocks leave the block list and its count in the config.
DESCRIBED = {("bert", "channel"), ("llama_gqa", "channel"), ("llama_gqa", "head"), ("gemma3", "channel"),
             ("gemma3", "head"), ("bert", "layer"), ("gpt2", "layer"), ("llama_gqa", "layer"), ("gemma3", "layer")}


HF_CUTS = pytest.mark.parametrize("name, granularity", [(n, g) for n in ("bert", "gpt2", "llama_gqa", "gemma3")
                                                          for g in ("channel", "head", "layer")])


def hf_model(name):
    """(the seeded model, token ids) of one hf_models() entry."""
    torch.manual_seed(0)
    return hf_models()[name](), torch.randint(0, 100, (1, 8))


@HF_CUTS
def test_hugging_face_cut_is_refused_unless_its_config_describes_it(name, granularity, tmp_path):
    model, ids = hf_model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    if (name, granularity) not in DESCRIBED:
        with pytest.raises(pk.PruneError, match="config cannot describe the pruned shapes"):
            pk.prune_structured(model, (ids,), ratio=0.5, granularity=granularity)
        assert model.config.to_dict() == config and model.state_dict().keys() == before.keys()
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        return
    prune_and_check(model, (ids,), check_macs=name != "gpt2", ratio=0.5, granularity=granularity)
    model.save_pretrained(tmp_path / "hf")
    again = type(model).from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert torch.allclose(tensors_of(again(ids))[0], tensors_of(model.eval()(ids))[0], atol=1e-6)


@HF_CUTS
def test_hugging_face(name, granularity, tmp_path):
    """Any cut, with require_config=False: pk.save / pk.load keep what the config cannot say."""
    model, ids = hf_model(name)
    prune_and_check(model, (ids,), check_macs=name != "gpt2", ratio=0.5, granularity=granularity,
                    require_config=False)
    backward(model, (ids,))
    pk.save(model.eval(), tmp_path / "m.safetensors")
    loaded = pk.load(tmp_path / "m.safetensors", model=hf_models()[name]()).eval()
    with torch.no_grad():
        assert torch.allclose(tensors_of(loaded(ids))[0], tensors_of(model(ids))[0])


def test_llama_gqa_heads_go_by_key_value_group():
    model = hf_models()["llama_gqa"]()
    pk.prune_structured(model, (torch.randint(0, 100, (1, 8)),), ratio=0.5, granularity="head")
    for layer in model.model.layers:
        attention = layer.self_attn
        assert attention.q_proj.out_features == 2 * attention.head_dim  # 4 query heads -> 2
        assert attention.k_proj.out_features == attention.v_proj.out_features == attention.head_dim
        assert attention.o_proj.in_features == 2 * attention.head_dim
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (2, 1)


def test_hugging_face_config_follows_channels():
    model = hf_models()["llama_gqa"]()
    ids = torch.randint(0, 100, (1, 8))
    pk.prune_structured(model, (ids,), ratio=0.5)
    assert model.config.hidden_size == model.model.embed_tokens.embedding_dim == 32
    assert model.config.intermediate_size == model.model.layers[0].mlp.up_proj.out_features == 64
    rebuilt = type(model)(model.config)  # the config now describes the pruned shapes
    assert rebuilt.model.layers[0].mlp.up_proj.weight.shape == model.model.layers[0].mlp.up_proj.weight.shape


def test_heads_that_do_not_divide_the_width_are_refused_and_restored():
    """BERT at a quarter of its 4 heads: the config cannot even be built (3 heads, width 64)."""
    model, ids = hf_model("bert")
    before, config = {k: v.clone() for k, v in model.state_dict().items()}, model.config.to_dict()
    with pytest.raises(pk.PruneError, match="config cannot describe"):
        pk.prune_structured(model, (ids,), ratio=0.25, granularity="head")
    assert model.config.to_dict() == config
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
