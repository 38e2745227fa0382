"""save_gguf: a Hugging Face causal LM (pruned or not) as one .gguf file, for llama.cpp users.

    from prunekit.llm.gguf_export import save_gguf
    save_gguf(model, tokenizer, "slim.gguf")

Families: Llama (`llama`) and Gemma 3 text (`gemma3`). Tensors are written as they are, not
quantized: float32, float16 or bfloat16 matrices as the model holds them, 1-D tensors (norms) in
float32 as llama.cpp's own converter writes them; quantize afterwards with llama.cpp's
`llama-quantize` if wanted. Beside them: the shape metadata both llama.cpp and transformers' GGUF
reader build the model from (heads, key/value heads, head size, FFN width), and the tokenizer
(prunekit.llm.gguf_vocab). What transformers' reader does not read back (a rope scaling, biases,
Gemma 3's layer pattern and attention scale) must be the family's default, or the file is refused
before anything is written: it would load as a different model.

A structurally pruned model (fewer heads and FFN neurons, the same number in every block; fewer
blocks for Llama) is smaller and faster in llama.cpp. Unstructured zeros are not: llama.cpp has no sparse kernels,
so an unstructured GGUF is a format convenience, exactly as fast as the dense model.
"""
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from prunekit._utils.atomic import atomic_path
from prunekit.errors import PruneError
from prunekit.llm.gguf_vocab import vocab_metadata

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Family:
    arch: str          # llama.cpp's architecture name
    act: str           # the activation llama.cpp computes for it
    permute_qk: bool   # llama.cpp's llama rotates interleaved pairs where HF rotates halves
    norm_offset: float  # Gemma stores 1 + w: its RMSNorm scales by (1 + weight)


FAMILIES = {"llama": _Family("llama", "silu", True, 0.0),
            "gemma3_text": _Family("gemma3", "gelu_pytorch_tanh", False, 1.0)}
SUPPORTED = "llama, gemma3 (Gemma3ForCausalLM)"


def check_family(config) -> _Family:
    """The family's writer for this config, or a PruneError naming it and the supported ones."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise PruneError(f"--format gguf: model type {model_type!r} can't be written as GGUF by prunekit; "
                         f"supported: {SUPPORTED} (or save as a Hugging Face folder, --format hf)")
    return FAMILIES[model_type]


def check_writable(model, tokenizer, *, layers: int = 0) -> dict:
    """The file's metadata, or the PruneError that writing it would raise: family, config, tokenizer
    and the gguf package, checked before any work (the CLI calls it before pruning starts, with the
    number of blocks it will remove)."""
    try:
        import gguf as _  # noqa: F401
    except ImportError as err:
        raise PruneError(f"--format gguf needs the gguf package: pip install gguf ({err})") from None
    family = check_family(model.config)
    _check_config(model.config, family)
    if layers and family.arch == "gemma3":
        raise PruneError("--format gguf with --layers: removing Gemma 3 blocks breaks the 5 sliding-window to 1 "
                         "global pattern llama.cpp assumes; cut heads/FFN only, or save with --format hf")
    return {**_model_metadata(model.config, family), **vocab_metadata(tokenizer, model.config.vocab_size)}


def save_gguf(model, tokenizer, path) -> Path:
    """Write `model` and `tokenizer` to `path` (a .gguf file, written under a temporary name)."""
    import gguf
    meta = check_writable(model, tokenizer)
    _check_shapes(model)
    config, family = model.config, check_family(model.config)
    tensors = _tensors(model, family, gguf)
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, family.arch)
        try:
            writer.add_name(Path(str(getattr(config, "_name_or_path", "") or path.stem)).name)
            writer.add_file_type(_file_type(tensors, gguf))
            for key, value in meta.items():
                _put(writer, key, value)
            for name, array, raw in tensors:
                writer.add_tensor(name, array, raw_dtype=raw)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    log.info("wrote %s: %s, %d tensors", path, family.arch, len(tensors))
    return path


def _rope(config, layer_type=None) -> dict:
    rope = getattr(config, "rope_parameters", None) or {}
    return rope.get(layer_type, rope) if layer_type else rope


def _check_config(config, family: _Family) -> None:
    """Refuse what llama.cpp or transformers' GGUF reader would rebuild differently."""
    act = getattr(config, "hidden_act", None) or getattr(config, "hidden_activation", None)
    problems = [f"activation {act!r} (llama.cpp computes {family.act!r})"] if act != family.act else []
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("biases in attention/MLP (the GGUF reader drops them)")
    if family.arch == "llama" and _rope(config).get("rope_type", "default") != "default":
        problems.append(f"rope scaling {_rope(config)['rope_type']!r} (the GGUF reader ignores it)")
    if family.arch == "gemma3":
        problems += _gemma3_problems(config)
    if problems:
        raise PruneError(f"--format gguf: this {family.arch} model has {'; '.join(problems)}; GGUF can't describe "
                         "it, save it as a Hugging Face folder (--format hf)")


def _gemma3_problems(config) -> list:
    """llama.cpp hard-codes these for Gemma 3 and transformers' reader takes the config's defaults."""
    problems = []
    pattern = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(config.num_hidden_layers)]
    if list(config.layer_types) != pattern:
        problems.append("a layer pattern other than 5 sliding-window layers to 1 global (llama.cpp's)")
    if config.query_pre_attn_scalar != config.head_dim:  # llama.cpp scales attention by 1/sqrt(key_length)
        problems.append(f"query_pre_attn_scalar {config.query_pre_attn_scalar} != head_dim {config.head_dim}")
    if config.final_logit_softcapping or config.attn_logit_softcapping:
        problems.append("logit softcapping")
    if getattr(config, "use_bidirectional_attention", False):
        problems.append("bidirectional attention")
    local, full = _rope(config, "sliding_attention"), _rope(config, "full_attention")
    if local.get("rope_theta") != 10000.0 or {local.get("rope_type"), full.get("rope_type")} != {"default"}:
        problems.append("a rope other than llama.cpp's (local base 10000, no scaling)")
    return problems


def _check_shapes(model) -> None:
    """Every tensor has the shape the config gives every block: GGUF states one head count and one
    FFN width for all of them (a cut that differs per block can't be described)."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in type(model)(model.config).state_dict().items()}
    for key, tensor in model.state_dict().items():
        if key in expected and tensor.shape != expected[key]:
            raise PruneError(f"--format gguf: {key} is {tuple(tensor.shape)}, the config describes "
                             f"{tuple(expected[key])}; GGUF states one size for every block, so a cut that "
                             "differs per block can't be written (save it as a Hugging Face folder, --format hf)")


def _model_metadata(config, family: _Family) -> dict:
    """The shape keys under the architecture's prefix: those llama.cpp and transformers both read."""
    a = family.arch
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    meta = {f"{a}.context_length": config.max_position_embeddings, f"{a}.embedding_length": config.hidden_size,
            f"{a}.block_count": config.num_hidden_layers, f"{a}.feed_forward_length": config.intermediate_size,
            f"{a}.attention.head_count": config.num_attention_heads,
            f"{a}.attention.head_count_kv": config.num_key_value_heads or config.num_attention_heads,
            f"{a}.attention.key_length": head_dim, f"{a}.attention.value_length": head_dim,
            f"{a}.attention.layer_norm_rms_epsilon": float(config.rms_norm_eps), f"{a}.vocab_size": config.vocab_size}
    if family.arch == "llama":
        meta[f"{a}.rope.dimension_count"] = head_dim  # the reader takes head_dim from this one
        meta[f"{a}.rope.freq_base"] = float(_rope(config).get("rope_theta", 10000.0))
    else:
        meta[f"{a}.rope.freq_base"] = float(_rope(config, "full_attention")["rope_theta"])
        meta[f"{a}.attention.sliding_window"] = config.sliding_window
    return meta


def _permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """HF's rotate-half row order → llama.cpp's interleaved pairs (convert_hf_to_gguf's `permute`;
    transformers' LlamaTensorProcessor._reverse_permute_weights undoes it on load)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tensors(model, family: _Family, gguf) -> list:
    """[(GGUF name, numpy array, raw ggml type or None)] in state-dict order, checked before writing."""
    config = model.config
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == family.arch),
                                     config.num_hidden_layers)
    out = []
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reads a missing output.weight as tied to the embedding
        module, _, suffix = key.rpartition(".")
        name = names.get_name(module)
        if name is None:
            raise PruneError(f"--format gguf: {key} has no name in llama.cpp's {family.arch} tensor map; "
                             "bake masks first (pk.make_permanent) or save as a Hugging Face folder")
        tensor = tensor.detach().cpu()
        if family.permute_qk and name.endswith(("attn_q", "attn_k")):
            tensor = _permute(tensor, config.num_attention_heads if name.endswith("attn_q")
                              else config.num_key_value_heads or config.num_attention_heads)
        if tensor.dim() == 1 or tensor.dtype not in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        if family.norm_offset and name.endswith("norm"):
            tensor = tensor + family.norm_offset
        out.append((f"{name}.{suffix}", *_array(tensor.contiguous(), gguf)))
    return out


def _array(tensor: torch.Tensor, gguf):
    """numpy has no bfloat16: its bits go as uint16 with the ggml type named."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view("uint16"), gguf.GGMLQuantizationType.BF16
    return tensor.numpy(), None


def _file_type(tensors, gguf) -> int:
    kinds = {raw or str(array.dtype) for _, array, raw in tensors if array.ndim > 1}
    if gguf.GGMLQuantizationType.BF16 in kinds:
        return gguf.LlamaFileType.MOSTLY_BF16
    return gguf.LlamaFileType.MOSTLY_F16 if "float16" in kinds else gguf.LlamaFileType.ALL_F32


def _put(writer, key: str, value) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, value)
