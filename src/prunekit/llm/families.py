"""Where each Hugging Face family keeps a block's FFN and attention, and the config fields that
describe their sizes, so that structured cuts leave a model `from_pretrained` can rebuild.

FFN: the layers that make the hidden neurons ("in": gate and up, fc1, c_fc, intermediate) and
the one that reads them ("out"). Phi-3 fuses gate and up in one matrix (`gate_up_proj`, halves
sliced alike). Attention heads: Llama-style q/k/v/o projections (Llama, Qwen2/3, Mistral,
Gemma-3) or Phi-3's fused `qkv_proj`; their configs take `head_dim` explicitly, so fewer heads
at the same width is describable. BERT, RoBERTa, DistilBERT and GPT-2 derive the head size as
hidden / heads: a config cannot describe fewer heads there, and head pruning is refused.
"""
from dataclasses import dataclass

from torch import nn

from prunekit.errors import PruneError

FFN_LAYOUTS = (  # (in layers, out layer, fused gate+up) relative to the block
    (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", False),
    (("mlp.gate_up_proj",), "mlp.down_proj", True),
    (("mlp.c_fc",), "mlp.c_proj", False),
    (("mlp.fc1",), "mlp.fc2", False),
    (("intermediate.dense",), "output.dense", False),
    (("ffn.lin1",), "ffn.lin2", False),
)
FFN_FIELDS = ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim")


@dataclass
class FFN:
    ins: list        # modules producing the neurons (rows), in order
    out: nn.Module   # the module reading them (columns)
    fused: bool      # one `in` module holds gate and up, stacked


@dataclass
class Attention:
    q: nn.Module | None
    k: nn.Module | None
    v: nn.Module | None
    o: nn.Module
    qkv: nn.Module | None   # Phi-3's fused projection, rows [q | k | v]
    heads: int
    kv_heads: int
    head_dim: int


def _get(block, path):
    try:
        return block.get_submodule(path)
    except AttributeError:
        return None


def find_ffn(block: nn.Module) -> FFN:
    for ins, out, fused in FFN_LAYOUTS:
        modules = [_get(block, p) for p in ins]
        if all(m is not None for m in modules) and _get(block, out) is not None:
            return FFN(modules, _get(block, out), fused)
    raise PruneError(f"{type(block).__name__}: no FFN layout prunekit knows (gate/up/down, c_fc/c_proj, fc1/fc2, "
                     "intermediate/output, lin1/lin2)")


def find_attention(block: nn.Module, config) -> Attention:
    attn = _get(block, "self_attn")
    head_dim = getattr(config, "head_dim", None)
    if attn is None or not hasattr(attn, "o_proj") or not hasattr(config, "num_key_value_heads"):
        raise PruneError(f"{type(block).__name__}: head pruning needs Llama-style attention (q/k/v/o projections "
                         "and a config with num_key_value_heads); this family derives the head size from "
                         "hidden / heads, so its config cannot describe fewer heads: use pk.prune_structured "
                         "and pk.save / pk.load")
    heads, kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = head_dim or config.hidden_size // heads
    return Attention(_get(attn, "q_proj"), _get(attn, "k_proj"), _get(attn, "v_proj"), attn.o_proj,
                     _get(attn, "qkv_proj"), heads, kv, head_dim)


def set_config(config, fields, value) -> None:
    """Set the first of `fields` the config has (GPT-2's n_inner may be None: it is set too)."""
    for field in fields:
        if field in config.to_dict() or hasattr(config, field):
            setattr(config, field, value)
            return
    raise PruneError(f"{type(config).__name__} has none of {fields}: the cut cannot be written into the config")
