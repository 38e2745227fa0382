"""Keep a Hugging Face model's config in step with its pruned shapes.

Structured pruning changes hidden size, MLP width and head counts; `config` is what
`save_pretrained`, generation and caches read. Each field is set only when every layer
agrees (uniform pruning); otherwise the config keeps its value and a warning says so
(pk.save / pk.load keep per-layer shapes either way).
"""
import logging

from torch import nn

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
