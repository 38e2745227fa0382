"""Read a .gguf file into a plain transformers model: weights dequantized, nothing marking it quantized.

transformers loads a GGUF through its quantizer machinery: it leaves `model.hf_quantizer`,
`config.quantization_config`, `model.is_quantized` and `model.quantization_method` behind, and
`save_pretrained` refuses such a model ("quantized with gguf and is not serializable"). Asking for
`GgufConfig(dequantize=True)` makes transformers unpack every weight at load time (never keep
packed blocks, even where the `kernels` package could run them) and strip those marks itself
once the weights are in place: one model in memory, no copy. `strip_quantization` then checks
(and clears) each mark, so a future transformers that keeps one fails here, not in save_pretrained.
Shared by llm.load and the fetched Gemma-3's conversion (prunekit.data.assets).
"""
import struct
from pathlib import Path

from prunekit.errors import PruneError


def load_gguf(path, *, dtype=None):
    """(model in eval mode, tokenizer) from a .gguf file, offline; dtype as from_pretrained's."""
    try:
        import gguf as _  # noqa: F401
        import transformers
        from transformers import GgufConfig
    except ImportError as err:
        raise PruneError(f"reading a GGUF needs the gguf package: pip install -e '.[test]' ({err})") from None
    path = Path(path)
    extra = {"gguf_file": path.name, "local_files_only": True}
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path.parent, quantization_config=GgufConfig(dequantize=True), **extra,
            **({"dtype": dtype} if dtype is not None else {}))
        tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, **extra)
    except (ValueError, KeyError, NotImplementedError, EOFError, struct.error) as err:  # a damaged or odd file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PruneError(f"{path}: transformers can't read this GGUF ({first})") from None
    strip_quantization(model)
    return model.eval(), tokenizer


def strip_quantization(model) -> None:
    """Clear every attribute that tells save_pretrained / from_pretrained / generate the model is
    quantized, on the model and on each config it holds (transformers >= 5 already has; a no-op then)."""
    model.hf_quantizer = None
    if "quantization_method" in vars(model):
        del model.quantization_method
    model.is_quantized = False
    configs = [model.config]
    if hasattr(model.config, "get_text_config"):
        configs.append(model.config.get_text_config(decoder=True))
    for config in configs:
        if "quantization_config" in vars(config):
            del config.quantization_config
