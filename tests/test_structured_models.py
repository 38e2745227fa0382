"""Failure classes found by running timm's and Hugging Face's models (benchmarks/
structured_coverage.py --suite timm), each on a small model built here: tensors made on the
CPU inside forward, a submodule shared by two blocks, a ViT's patch embedding, wrappers with
read-only channel properties, rms_norm, unfold and fold; and Ultralytics' YOLO models, which
cache their anchors on the first call."""
import copy
import logging

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import prunekit as pk
from helpers import dead_copy, randomize_norms
from prunekit import surgery
from prunekit._utils.inputs import tensors_of
from prunekit.serialization.sources import load_model


def _same_as_dead(model, original, res, x):
    with torch.no_grad():
        torch.testing.assert_close(model(x), dead_copy(original, res.removed)(x))


def _pruned(model, x, ratio=0.5, **kwargs):
    """Prune `model`; returns (result, its original copy) after checking it shrank."""
    torch.manual_seed(0)
    original = copy.deepcopy(model)
    res = pk.prune_structured(model, x, ratio=ratio, **kwargs)
    assert res.params_after < res.params_before
    return res, original


# -- forwards that make tensors on the CPU, not from their inputs ---------------------------

class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 1)

    def body(self, y):
        return y

    def forward(self, x):
        return self.b(F.relu(self.body(self.a(x))))


class AddsArange(TwoConvs):
    def body(self, y):
        return y + torch.arange(y.shape[-1]).float()  # no device=: made on the CPU


class MultipliesByCpuMask(TwoConvs):
    def body(self, y):
        return y * torch.ones(y.shape[-2], y.shape[-1]).tril()


class ScalesByCpuBuffer(TwoConvs):
    """An in-place write of a value computed from the input into a CPU tensor: meta tensors
    cannot follow it, so the trace runs on the real inputs."""

    def forward(self, x):
        scale = torch.ones(x.shape[0], 1, 1, 1)
        scale.mul_(x.abs().mean((1, 2, 3), keepdim=True))
        return self.b(F.relu(self.a(x) * scale))


@pytest.mark.parametrize("cls", [AddsArange, MultipliesByCpuMask, ScalesByCpuBuffer])
def test_forward_making_cpu_tensors_prunes(cls):
    model, x = cls().eval(), torch.randn(2, 3, 8, 8)
    res, original = _pruned(model, x)
    assert model.a.out_channels == 8
    _same_as_dead(model, original, res, x)


def test_a_trace_meta_tensors_cannot_follow_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="prunekit"):
        _pruned(ScalesByCpuBuffer().eval(), torch.randn(2, 3, 8, 8))
    assert any("tracing on the inputs' device instead" in r.getMessage() for r in caplog.records)


class Block(nn.Module):
    def __init__(self, shared):
        super().__init__()
        self.shared, self.fc = shared, nn.Linear(16, 16)

    def forward(self, x):
        return x + self.fc(F.relu(self.shared(x)))


class SharedSubmodule(nn.Module):
    """One position encoding registered at the top and inside every block (timm's CoaT)."""

    def __init__(self):
        super().__init__()
        self.stem, self.pos = nn.Linear(8, 16), nn.Linear(16, 16)
        self.blocks = nn.Sequential(Block(self.pos), Block(self.pos))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def test_a_submodule_shared_by_two_blocks_keeps_real_weights():
    model, x = SharedSubmodule().eval(), torch.randn(4, 8)
    res, original = _pruned(model, x)
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    assert model.pos.out_features < 16 and model.blocks[0].shared is model.pos
    _same_as_dead(model, original, res, x)


# -- Hugging Face ViT: a patch embedding, not an Embedding -----------------------------------

def test_hf_vit_prunes_and_its_config_follows_the_patch_embedding():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, num_labels=5)
    torch.manual_seed(0)
    model, x = transformers.ViTForImageClassification(config).eval(), torch.randn(2, 3, 32, 32)
    described = copy.deepcopy(model)  # transformers 5.23's ViT reads config.head_dim: the cut is describable
    pk.prune_structured(described, x, ratio=0.5)
    assert described.config.hidden_size < 32 and described.config.head_dim == 8
    _pruned(model, x, require_config=False)
    projection = model.get_input_embeddings().projection
    assert model.config.hidden_size == projection.out_channels < 32
    assert model(x).logits.shape == (2, 5)


# -- wrappers whose channel counts are read-only properties (timm's ConvNormAct) -------------

class Wrapped(nn.Module):
    """A conv whose in/out channels are properties reading its child, as in timm.layers."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)

    @property
    def in_channels(self):
        return self.conv.in_channels

    @property
    def out_channels(self):
        return self.conv.out_channels

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class WrappedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = Wrapped(3, 16), Wrapped(16, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.b(self.a(x)).mean((2, 3)))


def test_read_only_channel_properties_save_and_load(tmp_path):
    torch.manual_seed(0)
    model, x = WrappedNet().eval(), torch.randn(2, 3, 8, 8)
    _pruned(model, x)
    assert model.a.out_channels == model.a.conv.out_channels == 8
    pk.save(model, tmp_path / "m.safetensors")
    loaded = pk.load(tmp_path / "m.safetensors", model=WrappedNet().eval())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    # a file saved before such properties were left out holds them: they are not set
    surgery.apply(model, surgery.Cuts({}, {("a", "in_channels"): 3}))


# -- rms_norm ------------------------------------------------------------------------------

class RmsNorm(nn.Module):
    """timm's RmsNorm: F.rms_norm with its own normalized_shape."""

    def __init__(self, width, fixed_shape=None):
        super().__init__()
        self.normalized_shape, self.fixed_shape = (width,), fixed_shape
        self.weight = nn.Parameter(torch.rand(width) + 0.5)

    def forward(self, x):
        return F.rms_norm(x, self.fixed_shape or self.normalized_shape, self.weight, 1e-6)


class RmsNet(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.a, self.norm, self.b = nn.Linear(8, 32), norm, nn.Linear(32, 3)

    def forward(self, x):
        return self.b(self.norm(self.a(x)))


@pytest.mark.parametrize("norm", [lambda: RmsNorm(32), lambda: nn.RMSNorm(32, eps=1e-6)])
def test_rms_norm_slices_its_weight_and_is_recomputed_over_kept_channels(norm):
    torch.manual_seed(0)
    model, x = RmsNet(norm()).eval(), torch.randn(4, 8)
    res, original = _pruned(model, x)
    kept = [c for c in range(32) if c not in res.removed["a"]["out"]]
    assert model.norm.weight.shape == (16,) and tuple(model.norm.normalized_shape) == (16,)
    with torch.no_grad():
        y = original.a(x)[:, kept]
        expected = original.b.weight[:, kept] @ F.rms_norm(y, (16,), original.norm.weight[kept], 1e-6).T
        torch.testing.assert_close(model(x), expected.T + original.b.bias)


def test_rms_norm_with_a_fixed_shape_keeps_its_channels():
    model = RmsNet(RmsNorm(32, fixed_shape=(32,))).eval()
    before = copy.deepcopy(model.state_dict())
    res = pk.prune_structured(model, torch.randn(4, 8), ratio=0.5)
    assert res.removed == {} and res.kept_fixed == ["rms_norm in norm"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# -- unfold and fold -----------------------------------------------------------------------

class Unfolded(nn.Module):
    """Token-to-token style: im2col rows (channel x 2x2 window) feed a Linear."""

    def __init__(self, padding=0):
        super().__init__()
        self.a, self.unfold = nn.Conv2d(3, 8, 3, padding=1), nn.Unfold(2, padding=padding, stride=2)
        self.b = nn.Linear(32, 5)

    def forward(self, x):
        return self.b(self.unfold(F.relu(self.a(x))).transpose(1, 2)).mean(1)


class Folded(nn.Module):
    """Outlook-attention style: unfold, weigh the window positions, fold back."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.mix = nn.Parameter(torch.rand(4, 1) + 0.5)  # one weight per window position

    def forward(self, x):
        cols = F.unfold(F.relu(self.a(x)), 2, stride=2)  # (N, 8*4, L)
        n, _, length = cols.shape
        cols = (cols.view(n, -1, 4, length) * self.mix).view(n, -1, length)
        return self.b(F.fold(cols, x.shape[-2:], 2, stride=2))


class TensorUnfolded(TwoConvs):
    """HaloNet style: x.unfold(dim, size, step) over a spatial dim."""

    def body(self, y):
        return y.unfold(3, 2, 2).mean(-1)


@pytest.mark.parametrize("model", [lambda: Unfolded(), lambda: Unfolded(padding=1), lambda: Folded(),
                                   lambda: TensorUnfolded()])
def test_unfold_and_fold_move_rows_with_their_channel(model):
    torch.manual_seed(0)
    model, x = model().eval(), torch.randn(2, 3, 8, 8)
    res, original = _pruned(model, x)
    assert model.a.out_channels == original.a.out_channels // 2
    _same_as_dead(model, original, res, x)


class UnfoldsChannels(TwoConvs):
    def body(self, y):
        return y.unfold(1, 4, 4).permute(0, 1, 4, 2, 3).flatten(1, 2)  # (N, 16, H, W) again


def test_windows_over_channels_keep_them():
    with pytest.raises(pk.PruneError, match="no prunable channels"):
        pk.prune_structured(UnfoldsChannels().eval(), torch.randn(2, 3, 8, 8), ratio=0.5)


# -- a layer whose every channel scores lowest in its space ----------------------------------

class CatResidual(nn.Module):
    """Inception-ResNet's reduction block: a conv branch concatenated with the stream it
    branches from, then residual blocks on the concatenation; the branch scores lowest."""

    def __init__(self):
        super().__init__()
        self.stem, self.branch = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 3, padding=1)
        self.body, self.head = nn.Conv2d(12, 12, 1), nn.Conv2d(12, 5, 1)
        with torch.no_grad():
            for weight in (self.branch.weight, self.body.weight[:4], self.body.weight[:, :4],
                           self.head.weight[:, :4]):
                weight.mul_(0.01)

    def forward(self, x):
        y = F.relu(self.stem(x))
        z = torch.cat([F.relu(self.branch(y)), y], 1)
        return self.head(z + self.body(z))


def test_a_layer_keeps_one_channel_when_all_of_its_channels_score_lowest():
    torch.manual_seed(0)
    model, x = CatResidual().eval(), torch.randn(2, 3, 8, 8)
    res, original = _pruned(model, x)
    assert model.branch.out_channels == 1 and model.stem.out_channels == 6  # one of 12 more stays
    _same_as_dead(model, original, res, x)


@pytest.mark.parametrize("config", ["yolov8n.yaml", "yolo11n.yaml", "yolov10n.yaml", "yolov8n-seg.yaml",
                                    "yolo11n-pose.yaml"])
def test_yolo_is_pruned_head_included_and_computes_what_the_original_computes(config):
    """YOLO's heads cache their anchors on the first call: the trace and the check must see
    the same path, or every channel ends up pinned. Every output (boxes and classes, masks,
    keypoints) equals the original's with the removed channels zeroed."""
    pytest.importorskip("ultralytics")
    model = randomize_norms(load_model(f"ultralytics:{config}", num_classes=3)).eval()
    x = torch.randn(1, 3, 64, 64)
    original = copy.deepcopy(model)
    result = pk.prune_structured(model, x, ratio=0.3)
    assert result.params_after < 0.7 * result.params_before
    head = f"model.{len(model.model) - 1}."
    assert any(name.startswith(head) for name in result.removed)  # the head's own convs too
    with torch.no_grad():
        got, expected = tensors_of(model(x)), tensors_of(dead_copy(original, result.removed)(x))
    assert len(got) == len(expected) and all(g.shape == e.shape for g, e in zip(got, expected))
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, atol=1e-4 * e.abs().max().item(), rtol=1e-4)
