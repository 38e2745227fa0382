"""The timm side of structured_coverage.py: which timm models, how they are built and fed,
and what Torch-Pruning's timm example does around its pruner.

Choice (deterministic): for every module in `timm.list_modules()`, the model of
`timm.list_models(module=...)` with the fewest parameters at its default configuration
(counted on the meta device, nothing allocated), ties broken by name. Models are named
"timm/<name>" in the results so they never collide with torchvision's (vgg11, inception_v3).
"""
import warnings

PREFIX = "timm/"


def _param_count_meta(name, **kwargs):
    import timm
    import torch
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False, **kwargs)
    return sum(p.numel() for p in model.parameters())


def smallest_per_module():
    """({"timm/<name>": module}, {module: reason}) : one model per timm module, and the
    modules none of whose models builds on the meta device."""
    import timm
    chosen, unbuildable = {}, {}
    for module in timm.list_modules():
        counts = []
        for name in timm.list_models(module=module):
            try:
                counts.append((_param_count_meta(name), name))
            except Exception as err:  # noqa: BLE001 - such a model is left out, with its reason
                unbuildable.setdefault(module, f"{name}: {type(err).__name__}: {err}"[:200])
        if counts:
            chosen[PREFIX + min(counts)[1]] = module
            unbuildable.pop(module, None)
    return chosen, unbuildable


def is_timm(name):
    return name.startswith(PREFIX)


def known(name):
    import timm
    return is_timm(name) and name[len(PREFIX):] in timm.list_models()


def build(name, **kwargs):
    """timm model `name` ("timm/<name>"), random init, seed 0, eval mode; `kwargs` go to
    timm.create_model (num_classes, img_size, ...)."""
    import timm
    import torch
    torch.manual_seed(0)
    return timm.create_model(name[len(PREFIX):], pretrained=False, **kwargs).eval()


def param_count(name, **kwargs):
    try:
        return _param_count_meta(name[len(PREFIX):], **kwargs)
    except Exception:  # noqa: BLE001 - then the model is kept
        return None


def example_input(model, batch=1, size=None):
    """A batch at the model's default input size (pretrained_cfg["input_size"]), or at
    `size` x `size` pixels with the model's channel count."""
    import torch
    generator = torch.Generator().manual_seed(1)
    shape = model.pretrained_cfg["input_size"]
    if size is not None:
        shape = (shape[0], size, size)
    return torch.randn(batch, *shape, generator=generator)


def tp_fixups(model):
    """As Torch-Pruning's timm example (examples/timm_models/prune_timm_models.py): after its
    step() every attention module with a `qkv` Linear gets head_dim = qkv width / (3 heads)."""
    from torch import nn
    for module in model.modules():
        qkv, heads = getattr(module, "qkv", None), getattr(module, "num_heads", None)
        if isinstance(qkv, nn.Linear) and isinstance(heads, int) and isinstance(getattr(module, "head_dim", None), int):
            module.head_dim = qkv.out_features // (3 * heads)
