"""Keep a Hugging Face model's config in step with its pruned shapes.

Structured pruning changes hidden size, MLP width and head counts; `config` is what
`save_pretrained`, generation and caches read. Each field is set only when every layer
agrees (uniform pruning); otherwise the config keeps its value and a warning says so
(pk.save / pk.load keep per-layer shapes either way).

`check_reload` is the last step of every structured cut of a Hugging Face model: the config must
pass the family's own validation, build the same shapes, and (up to RELOAD_LIMIT parameters)
save_pretrained -> from_pretrained must give the same outputs.
"""
import copy
import logging
import tempfile
import warnings

import torch
from torch import nn

from prunekit._utils.inputs import tensors_of
from prunekit._utils.modes import eval_mode
from prunekit.errors import PruneError

log = logging.getLogger(__name__)
RELOAD_LIMIT = 50_000_000  # parameters: a full save/load round trip at most this big, a meta rebuild above

_MLP_IN = ("up_proj", "fc1", "c_fc", "w1", "dense_h_to_4h", "wi", "lin1")  # T5's wi, DistilBERT's lin1
_MLP_FUSED = ("gate_up_proj", "Wi")  # gate and up stacked (Phi-3, ModernBERT): twice the FFN width


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
    widths += [_linear_out(m) // 2 for n, m in modules.items() if n.rpartition(".")[2] in _MLP_FUSED]
    for field in ("intermediate_size", "n_inner", "d_ff", "hidden_dim"):  # the FFN width, as each family names it
        _uniform(config, field, widths)
    attention = [m for m in modules.values() if hasattr(m, "q_proj") and isinstance(getattr(m, "head_dim", None), int)]
    _uniform(config, "num_attention_heads", [m.q_proj.out_features // m.head_dim for m in attention] +
             [getattr(m, "num_attention_heads", None) for m in modules.values()] +
             [getattr(m, "num_heads", None) for m in modules.values() if hasattr(m, "c_attn")])
    _uniform(config, "num_key_value_heads", [m.k_proj.out_features // m.head_dim for m in attention])
    _explicit_head_dim(config, modules.values())


def _explicit_head_dim(config, modules) -> None:
    """A narrower residual stream with heads of the same size: the head size goes into the config
    explicitly, where hidden / heads no longer gives it (Llama, Qwen2, Phi-3 read `head_dim`;
    check_reload finds out for a family that does not)."""
    dims = {m.head_dim for m in modules if hasattr(m, "o_proj") and isinstance(getattr(m, "head_dim", None), int)}
    heads = getattr(config, "num_attention_heads", None)
    if len(dims) == 1 and isinstance(heads, int) and isinstance(getattr(config, "hidden_size", None), int):
        dim = dims.pop()
        if getattr(config, "head_dim", None) != dim and config.hidden_size // heads != dim:
            config.head_dim = dim


def is_hf(model) -> bool:
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "to_dict") and hasattr(model, "save_pretrained")


def reloaded_config(config):
    """The config as from_pretrained reads it back: serialised, parsed and validated by the
    family's own checks (Gemma-3 and Llama refuse hidden_size % heads != 0, head_dim or not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return type(config).from_dict(config.to_dict())


def _rebuilt(model, config):
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return type(model)(config)


def undescribed(model) -> list:
    """For a Hugging Face model, "name: pruned shape, config gives shape" for every weight whose
    shape the model's own config, read back as from_pretrained reads it, would not rebuild;
    [] for a model without a config, or one fully described. Raises where the config itself
    is refused (ConfigGuard.check turns that into one line)."""
    if not is_hf(model):
        return []
    rebuilt = _rebuilt(model, reloaded_config(model.config))
    expected = {name: tuple(t.shape) for name, t in rebuilt.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    wrong = [f"{name}: {shape}, config gives {expected.get(name)}" for name, shape in found.items()
             if name in expected and expected[name] != shape]
    wrong += [f"{name}: not in a model built from the config" for name in found if name not in expected]
    wrong += [f"{name}: missing (the config builds it)" for name in expected if name not in found]
    return wrong


def describes(model, change) -> str | None:
    """None if the model's config, changed by `change(text config)` on a copy, validates and
    builds (on the meta device); else why not, in one line. The model is not touched."""
    config = copy.deepcopy(model.config)
    change(config.get_text_config() if hasattr(config, "get_text_config") else config)
    try:
        _rebuilt(model, reloaded_config(config))
    except Exception as err:  # noqa: BLE001 - any refusal of the family's config or constructor
        return _one_line(err)
    return None


def _one_line(err) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1].strip() if text else ''}"


def sync_attributes(model) -> None:
    """The sizes modules derive from the config when built (num_heads, inner_dim, all_head_size,
    num_key_value_groups, intermediate_size, ...) set as a model built from the current config
    has them, so the pruned model runs as the reloaded one will."""
    twins = dict(_rebuilt(model, reloaded_config(model.config)).named_modules())
    for name, module in model.named_modules():
        twin = twins.get(name)
        if type(twin) is not type(module):
            continue
        for key, value in vars(twin).items():
            old = vars(module).get(key)
            if key != "training" and type(value) in (int, float) and type(old) is type(value) and old != value:
                setattr(module, key, value)


def _outputs(model, inputs):
    with torch.no_grad(), eval_mode(model):
        out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
    for key in ("logits", "last_hidden_state"):
        if isinstance(getattr(out, key, None), torch.Tensor):
            return getattr(out, key)
    return tensors_of(out)[0]


def _round_trip(model, inputs) -> str | None:
    """None if save_pretrained -> from_pretrained gives the same outputs on `inputs`, else why not."""
    from transformers.utils import logging as hf_logging  # a check, not a user's save: no progress bars
    weight, bars = next(model.parameters()), hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="prunekit-reload-") as folder:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.save_pretrained(folder)
                again = type(model).from_pretrained(  # as the model runs: its dtype, its attention kernel
                    folder, dtype=weight.dtype, attn_implementation=getattr(model.config, "_attn_implementation", None))
                again = again.to(weight.device)
        except Exception as err:  # noqa: BLE001 - whatever save/load refuses is the answer
            return _one_line(err)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
    a, b = _outputs(model, inputs), _outputs(again, inputs)
    # bf16/fp16: a model cast with .to() keeps its rotary tables in that dtype, a reloaded one in fp32
    tol = max(1e-5, 4 * torch.finfo(a.dtype).eps) if a.is_floating_point() else 0.0
    a, b = a.float(), b.float()
    if a.shape != b.shape or not torch.allclose(a, b, rtol=tol, atol=tol * (1 + float(a.abs().max()))):
        return f"the reloaded model's outputs differ (max {float((a - b).abs().max()) if a.shape == b.shape else 'shape'})"
    return None


def check_reload(model, inputs=None, hint: str = "") -> None:
    """Raise PruneError (one line, ending with `hint`) unless from_pretrained rebuilds the model:
    the config validates and builds every weight's shape; and, for a model of at most
    RELOAD_LIMIT parameters with `inputs` given (a dict of keywords or a tuple of positional
    arguments), save_pretrained -> from_pretrained gives the same outputs. The caller restores."""
    if not is_hf(model):
        return
    try:
        wrong = undescribed(model)
    except Exception as err:  # noqa: BLE001 - the config cannot even build it (heads not dividing hidden)
        wrong = [_one_line(err)]
    if not wrong and inputs is not None and sum(p.numel() for p in model.parameters()) <= RELOAD_LIMIT:
        wrong = [reason] if (reason := _round_trip(model, inputs)) else []
    if wrong:
        raise PruneError(f"{type(model).__name__}: its config cannot describe the pruned shapes, so from_pretrained "
                         f"would not rebuild it ({wrong[0]}; {len(wrong)} in all); the model is as it was{hint}")


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

    def check(self, inputs=None) -> None:
        """check_reload, naming the ways out of the generic route."""
        check_reload(self.model, inputs, ". For transformers, prunekit.llm.prune_structured removes heads, FFN "
                     "neurons and blocks the config describes; or pass require_config=False and save with "
                     "pk.save / load with pk.load")


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
