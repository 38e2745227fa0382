"""Where each Hugging Face family keeps a block's FFN and attention, and the config fields that
describe their sizes, so that structured cuts leave a model `from_pretrained` can rebuild.

FFN: the layers that make the hidden neurons ("in": gate and up, fc1, c_fc, intermediate) and
the one that reads them ("out"). Phi-3 fuses gate and up in one matrix (`gate_up_proj`, halves
sliced alike).

Attention: an attention module is found by the names of its projections (`ATTENTION_LAYOUTS`,
looked for in every module of a block: T5's decoder block has two, self and cross attention).
Fewer heads at the same residual width is describable only where the config holds the head
size as its own field and the family reads it: `head_dim` for Llama, Qwen2/3, Mistral, Gemma-3,
Phi-3, ViT and T5 (its `d_kv`). BERT, RoBERTa, ALBERT, DistilBERT, GPT-2 and ModernBERT size a
head as hidden / heads in transformers 5.23 (which dropped `config.pruned_heads` and
`prune_heads`); DeBERTa-v2 reads `attention_head_size` but builds its output projection
hidden x hidden. Their configs cannot say fewer heads: heads are refused there.

Inputs: a model is fed its calibration rows as its main input (ViT's pixel_values through
`Runner`); `sample` is the row the reload check compares outputs on (T5: as decoder ids too).
"""
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.errors import PruneError
from prunekit.llm.prune import _check_batches, check_token_ids

FFN_LAYOUTS = (  # (in layers, out layer, fused gate+up) relative to the block
    (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", False),
    (("mlp.gate_up_proj",), "mlp.down_proj", True),
    (("mlp.c_fc",), "mlp.c_proj", False),
    (("mlp.fc1",), "mlp.fc2", False),
    (("intermediate.dense",), "output.dense", False),
    (("ffn.lin1",), "ffn.lin2", False),
)
FFN_FIELDS = ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim")


@dataclass(frozen=True)
class Layout:
    """Projection names relative to the attention module; `qkv` fused rows [q | k | v]."""
    q: str | None
    k: str | None
    v: str | None
    o: str
    qkv: str | None = None
    size_field: str | None = "head_dim"   # config field the family reads the head size from; None: refused
    families: str = ""
    why: str = "transformers sizes a head as hidden / heads here and config.pruned_heads is gone in transformers 5"


ATTENTION_LAYOUTS = (
    Layout("q_proj", "k_proj", "v_proj", "o_proj", families="Llama, Qwen2/3, Mistral, Gemma-3, ViT"),
    Layout(None, None, None, "o_proj", "qkv_proj", families="Phi-3"),
    Layout("q", "k", "v", "o", families="T5 (d_kv)"),
    Layout("self.query_proj", "self.key_proj", "self.value_proj", "output.dense", size_field=None,
           families="DeBERTa-v2", why="its attention output projection is built hidden x hidden"),
    Layout("self.query", "self.key", "self.value", "output.dense", size_field=None, families="BERT, RoBERTa"),
    Layout("query", "key", "value", "dense", size_field=None, families="ALBERT"),
    Layout("q_lin", "k_lin", "v_lin", "out_lin", size_field=None, families="DistilBERT"),
    Layout(None, None, None, "c_proj", "c_attn", size_field=None, families="GPT-2"),
    Layout(None, None, None, "Wo", "Wqkv", size_field=None, families="ModernBERT"),
)


@dataclass
class FFN:
    ins: list        # modules producing the neurons (rows), in order
    out: nn.Module   # the module reading them (columns)
    fused: bool      # one `in` module holds gate and up, stacked


@dataclass
class Attention:
    name: str               # within what was searched (a block, or the model)
    module: nn.Module       # the attention module
    q: nn.Module | None
    k: nn.Module | None
    v: nn.Module | None
    o: nn.Module
    qkv: nn.Module | None   # a fused projection, rows [q | k | v]
    heads: int
    kv_heads: int
    head_dim: int
    layout: Layout


def _get(block, path):
    if path is None:
        return None
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


def _layout_of(module: nn.Module):
    for layout in ATTENTION_LAYOUTS:
        names = (layout.qkv,) if layout.qkv else (layout.q, layout.k, layout.v)
        if all(_get(module, n) is not None for n in names + (layout.o,)):
            return layout
    return None


def head_counts(config) -> tuple:
    """(query heads, key/value heads) as the config says them."""
    heads = config.num_attention_heads
    return heads, getattr(config, "num_key_value_heads", None) or heads


def find_attentions(block: nn.Module, config) -> list:
    """Every attention module of the block (or model), outermost matches, in order."""
    found, inside = [], set()
    for name, module in block.named_modules():
        if any(name.startswith(f"{outer}.") for outer in inside):
            continue
        layout = _layout_of(module)
        if layout is None:
            continue
        inside.add(name)
        heads, kv = head_counts(config)
        o = _get(module, layout.o)
        width = o.in_features if hasattr(o, "in_features") else o.weight.shape[0]  # Conv1D stores (in, out)
        found.append(Attention(name, module, _get(module, layout.q), _get(module, layout.k), _get(module, layout.v), o,
                               _get(module, layout.qkv), heads, kv, width // heads, layout))
    if not found:
        raise PruneError(f"{type(block).__name__}: no attention layout prunekit knows (q/k/v/o projections, "
                         "fused qkv_proj, c_attn or Wqkv)")
    return found


def check_describable(attention: Attention, config) -> None:
    """Refuse heads where the config has no head size the family reads (`why` says what)."""
    if attention.layout.size_field is None:
        raise PruneError(f"{type(attention.module).__name__} ({attention.layout.families}): a config cannot describe "
                         f"fewer heads at this width ({attention.layout.why}); prune ffn / layers here, or heads "
                         "with pk.prune_structured(..., require_config=False) and pk.save / pk.load")


def set_head_config(config, attention: Attention, heads: int, kv_heads: int) -> None:
    """Write the head counts, and the head size explicitly (hidden / heads no longer gives it)."""
    setattr(config, attention.layout.size_field, attention.head_dim)
    config.num_attention_heads = heads
    if getattr(config, "num_key_value_heads", None) is not None:
        config.num_key_value_heads = kv_heads


def main_input(model) -> str:
    return getattr(model, "main_input_name", "input_ids")


def encoder_decoder(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


class Runner(nn.Module):
    """The model called with the calibration rows as its main input (ViT's pixel_values), so
    that the block recorder, which passes input_ids, runs any family."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids, **kwargs):
        return self.model(**{main_input(self.model): input_ids}, **kwargs)

    @staticmethod
    def wrap(model):
        return model if main_input(model) == "input_ids" else Runner(model)


def check_calibration(model, batches) -> None:
    """Token ids (sequences, tokens); for a vision model its pixel_values, one image a row."""
    if main_input(model) == "input_ids":
        _check_batches(batches)
        check_token_ids(model, batches)
    elif not isinstance(batches, torch.Tensor) or not batches.is_floating_point() or batches.dim() < 2 \
            or batches.shape[0] == 0:
        raise PruneError(f"{type(model).__name__} reads {main_input(model)}: pass them as one float tensor "
                         "(samples, ...), one sample a calibration row")


def sample(model, batches) -> dict:
    """One calibration row (32 tokens at most) as the model's keywords, on its device."""
    row = batches[:1, :32] if main_input(model) == "input_ids" else batches[:1]
    inputs = {main_input(model): row.to(next(model.parameters()).device)}
    if encoder_decoder(model):
        inputs["decoder_input_ids"] = inputs["input_ids"]
    return inputs


def set_config(config, fields, value) -> None:
    """Set the first of `fields` the config has (GPT-2's n_inner may be None: it is set too)."""
    for field in fields:
        if field in config.to_dict() or hasattr(config, field):
            setattr(config, field, value)
            return
    raise PruneError(f"{type(config).__name__} has none of {fields}: the cut cannot be written into the config")
