"""llm.load: a Hugging Face model and its tokenizer from a local folder or a GGUF file, offline.

A folder is read with the Auto classes: a causal LM where its config names one (…ForCausalLM,
…LMHeadModel), the bare model otherwise (an encoder such as BERT). A `.gguf` file is read by
transformers' GGUF loader (needs the `gguf` package), its weights dequantized (float32 unless
`dtype` says otherwise) and every mark of quantization cleared (prunekit._utils.hf_gguf), so the
model is a plain one that save_pretrained writes and prunekit.llm.gguf_export can write back as GGUF.
Nothing is downloaded: `local_files_only` is always set.
"""
from pathlib import Path

from prunekit._utils.hf_folder import reading
from prunekit._utils.hf_gguf import load_gguf
from prunekit.errors import PruneError

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _is_causal(config) -> bool:
    return any(arch.endswith(CAUSAL_SUFFIXES) for arch in (getattr(config, "architectures", None) or []))


def load(source, *, dtype=None):
    """(model in eval mode, tokenizer) from a folder holding config.json, or a .gguf file."""
    import transformers
    path = Path(source)
    if path.is_file() and path.suffix == ".gguf":
        return load_gguf(path, dtype=dtype)
    if not (path / "config.json").is_file():
        raise PruneError(f"{source}: not a Hugging Face model folder (no config.json) or a .gguf file")
    with reading(source):  # a cut-off config.json, no weights, no tokenizer: one line naming the folder
        causal = _is_causal(transformers.AutoConfig.from_pretrained(path, local_files_only=True))
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = auto.from_pretrained(path, local_files_only=True, **({"dtype": dtype} if dtype is not None else {}))
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer
