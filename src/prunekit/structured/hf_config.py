"""Keep a Hugging Face model's config in step with its pruned shapes.

Structured pruning changes hidden size, MLP width and head counts; `config` is what
`save_pretrained`, generation and caches read. Each field is set only when every layer
agrees (uniform pruning); otherwise the config keeps its value and a warning says so
(pk.save / pk.load keep per-layer shapes either way).
"""
import copy
import logging
import warnings

import torch
from torch import nn

from prunekit.errors import PruneError

log = logging.getLogger(__name__)

_MLP_IN = ("up_proj", "fc1", "c_fc", "w1", "dense_h_to_4h")


def _linear_out(module):
    return getattr(module, "out_features", None) or getattr(module, "nf", None)


def _uniform(config, field, values):
    values = {v for v in values if v is not None}
    if not values or not hasattr(config, field):
        return
    if len(values) > 1:
        log.warning("config.%s left at %s: pruned layers differ (%s)", field, getattr(config, field),
                    sorted(values))
        return
    value = values.pop()
    if getattr(config, field) != value:
        setattr(config, field, value)


def _embedding_width(embeddings):
    """Width of what the input embeddings produce: an Embedding's embedding_dim, or the out
    channels of a patch embedding's one layer (ViT's Conv2d projection); None if unclear."""
    width = getattr(embeddings, "embedding_dim", None)
    if isinstance(width, int):
        return width
    widths = [getattr(m, "out_channels", None) or getattr(m, "out_features", None)
              for m in embeddings.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    return widths[0] if len(widths) == 1 else None


def sync_config(model) -> None:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return
    modules = dict(model.named_modules())
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None:
        _uniform(config, "hidden_size", [_embedding_width(embeddings)])
    widths = [_linear_out(m) for n, m in modules.items() if n.rpartition(".")[2] in _MLP_IN]
    widths += [_linear_out(m) for n, m in modules.items() if n.endswith("intermediate.dense")]
    _uniform(config, "intermediate_size", widths)
    _uniform(config, "n_inner", widths)
    attention = [m for m in modules.values() if hasattr(m, "q_proj") and isinstance(getattr(m, "head_dim", None), int)]
    _uniform(config, "num_attention_heads", [m.q_proj.out_features // m.head_dim for m in attention] +
             [getattr(m, "num_attention_heads", None) for m in modules.values()] +
             [getattr(m, "num_heads", None) for m in modules.values() if hasattr(m, "c_attn")])
    _uniform(config, "num_key_value_heads", [m.k_proj.out_features // m.head_dim for m in attention])


def undescribed(model) -> list:
    """For a Hugging Face model, "name: pruned shape, config gives shape" for every weight whose
    shape the model's own config would not rebuild (what from_pretrained would refuse or
    re-initialise); [] for a model without a config, or one fully described."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict") or not hasattr(model, "save_pretrained"):
        return []
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rebuilt = type(model)(copy.deepcopy(config))
    expected = {name: tuple(t.shape) for name, t in rebuilt.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    wrong = [f"{name}: {shape}, config gives {expected.get(name)}" for name, shape in found.items()
             if name in expected and expected[name] != shape]
    wrong += [f"{name}: not in a model built from the config" for name in found if name not in expected]
    wrong += [f"{name}: missing (the config builds it)" for name in expected if name not in found]
    return wrong


class ConfigGuard:
    """Taken before pruning: `restore` puts back every module's tensors, children and attributes
    and a Hugging Face model's config; `check` raises (the caller restores) where the pruned
    shapes are ones the config cannot describe."""

    def __init__(self, model):
        from prunekit import surgery
        self.model = model
        self.snapshot = surgery.Snapshot(list(model.modules()))
        config = getattr(model, "config", None)
        self.configs = _config_states(config) if config is not None and hasattr(config, "to_dict") else []

    def restore(self) -> None:
        self.snapshot.restore()
        for config, state in self.configs:  # in place: modules hold these very objects
            vars(config).clear()
            vars(config).update(state)

    def check(self) -> None:
        try:
            wrong = undescribed(self.model)
        except Exception as err:  # noqa: BLE001 - the config cannot even build it (heads not dividing hidden)
            wrong = [f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"]
        if wrong:
            raise PruneError(
                f"{type(self.model).__name__}: its config cannot describe the pruned shapes ({wrong[0]}; "
                f"{len(wrong)} in all), so from_pretrained could not rebuild it. For transformers, "
                "prunekit.llm.prune_structured removes heads, FFN neurons and blocks uniformly; or pass "
                "require_config=False and save with pk.save / load with pk.load")


LAYER_FIELDS = ("num_hidden_layers", "n_layer", "n_layers")


def _config_states(config) -> list:
    """(config, copy of its fields) for a config and every config nested in it (a multimodal
    model's text config), the nested ones kept by identity in their parent's copy."""
    state, found = {}, []
    for key, value in vars(config).items():
        if hasattr(value, "to_dict") and hasattr(value, "__dict__"):
            state[key] = value
            found += _config_states(value)
        else:
            state[key] = copy.deepcopy(value)
    return [(config, state)] + found


def text_config(model):
    """The config that sizes the blocks: a multimodal model's text config, else the config."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def drop_blocks(model, list_name: str, drop) -> None:
    """Delete entries `drop` of the block list `list_name`; renumber the layer index the KV
    cache is keyed by; the config's block count and per-layer `layer_types` follow."""
    blocks = model.get_submodule(list_name)
    kept = [b for i, b in enumerate(blocks) if i not in set(drop)]
    parent, _, attr = list_name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, nn.ModuleList(kept))
    for index, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = index
    config = text_config(model)
    counts = [f for f in LAYER_FIELDS if getattr(config, f, None) == len(blocks)]
    if not counts:
        raise PruneError(f"{type(config).__name__} has no block count equal to the {len(blocks)} blocks of "
                         f"{list_name}: the removal cannot be written into the config")
    for field in counts:
        setattr(config, field, len(kept))
    if isinstance(getattr(config, "layer_types", None), list) and len(config.layer_types) == len(blocks):
        config.layer_types = [t for i, t in enumerate(config.layer_types) if i not in set(drop)]


def compact_skips(model, is_skip) -> None:
    """A Hugging Face model whose removed blocks were replaced by skips: take them out of the
    block list the config counts, so that the config describes the model (from_pretrained)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "save_pretrained"):
        return
    counted = text_config(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.ModuleList) and any(is_skip(child) for child in module) and \
                any(getattr(counted, f, None) == len(module) for f in LAYER_FIELDS):
            drop_blocks(model, name, [i for i, child in enumerate(module) if is_skip(child)])
