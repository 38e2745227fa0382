"""llm.load: a Hugging Face model and its tokenizer from a local folder or a GGUF file, offline.

A folder is read with the Auto classes: a causal LM where its config names one (…ForCausalLM,
…LMHeadModel), the bare model otherwise (an encoder such as BERT). A `.gguf` file is read by
transformers' GGUF loader (needs the `gguf` package), its weights dequantized to float32.
Nothing is downloaded: `local_files_only` is always set.
"""
from pathlib import Path

from prunekit.errors import PruneError

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _is_causal(config) -> bool:
    return any(arch.endswith(CAUSAL_SUFFIXES) for arch in (getattr(config, "architectures", None) or []))


def load(source, *, dtype=None):
    """(model in eval mode, tokenizer) from a folder holding config.json, or a .gguf file."""
    import transformers
    path = Path(source)
    if path.is_file() and path.suffix == ".gguf":
        folder, extra = path.parent, {"gguf_file": path.name}
        causal = True
    elif (path / "config.json").is_file():
        folder, extra = path, {}
        causal = _is_causal(transformers.AutoConfig.from_pretrained(folder, local_files_only=True))
    else:
        raise PruneError(f"{source}: not a Hugging Face model folder (no config.json) or a .gguf file")
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    if dtype is not None:
        extra["dtype"] = dtype
    model = auto.from_pretrained(folder, local_files_only=True, **extra)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True,
                                                           **{k: v for k, v in extra.items() if k == "gguf_file"})
    return model.eval(), tokenizer
