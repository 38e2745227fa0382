"""A Hugging Face tokenizer as GGUF metadata (`tokenizer.ggml.*`), the keys llama.cpp and
transformers' GGUF reader build a tokenizer from.

Two kinds of BPE vocabulary can be written, the two llama.cpp names:
- `gpt2`: byte-level BPE (GPT-2, Llama 3, Qwen): tokens, merges, and the pre-tokenizer's split by
  the name llama.cpp knows it by (`tokenizer.ggml.pre`);
- `llama`: SentencePiece-style BPE (Llama 2, Gemma): tokens with scores. A tokenizer.json keeps
  merges, not scores; SentencePiece orders its vocabulary best first, so the score is minus the id,
  which is also the order transformers' reader rebuilds Gemma's merges from.
Anything else (WordPiece, Unigram, an unnamed split) is refused: llama.cpp would cut text differently.
"""
import json
import logging
import re

from prunekit.errors import PruneError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # gguf.TokenType
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
log = logging.getLogger(__name__)


def vocab_metadata(tokenizer, n_vocab: int) -> dict:
    """`{key: value}` for every tokenizer key; PruneError where the tokenizer cannot be described."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str()) if hasattr(tokenizer, "backend_tokenizer") else None
    if spec is None or spec["model"]["type"] != "BPE":
        kind = spec["model"]["type"] if spec else type(tokenizer).__name__
        raise PruneError(f"tokenizer {kind}: GGUF can be written for a BPE tokenizer (byte-level or SentencePiece "
                         "style) only")
    kind, pre = _kind(spec)
    tokens, types = _tokens(tokenizer, n_vocab, kind)
    meta = {"tokenizer.ggml.model": kind, "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types}
    if kind == "gpt2":
        meta["tokenizer.ggml.merges"] = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    else:
        meta["tokenizer.ggml.scores"] = [-float(i) for i in range(n_vocab)]
        meta["tokenizer.ggml.add_space_prefix"] = _prepends_space(spec)
    for key in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{key}_token_id", None)
        if token_id is not None:
            gguf_key = {"unk": "unknown", "pad": "padding"}.get(key, key)
            meta[f"tokenizer.ggml.{gguf_key}_token_id"] = int(token_id)
    ids = tokenizer("a")["input_ids"]  # what the tokenizer adds around text, as it does it
    meta["tokenizer.ggml.add_bos_token"] = bool(ids) and ids[0] == tokenizer.bos_token_id
    meta["tokenizer.ggml.add_eos_token"] = bool(ids) and ids[-1] == tokenizer.eos_token_id
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        meta["tokenizer.chat_template"] = tokenizer.chat_template
    return meta


def _kind(spec) -> tuple[str, str]:
    """(tokenizer.ggml.model, tokenizer.ggml.pre) for this tokenizer.json."""
    parts = _flatten(spec.get("pre_tokenizer"))
    if any(p["type"] == "ByteLevel" for p in parts):
        splits = [p["pattern"].get("Regex") for p in parts if p["type"] == "Split"]
        if not splits and all(p.get("use_regex", True) for p in parts if p["type"] == "ByteLevel"):
            return "gpt2", "gpt-2"
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
        for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
            if splits == [regex]:
                return "gpt2", name
        raise PruneError("tokenizer: its byte-level pre-tokenizer splits text by a pattern llama.cpp has no name "
                         "for, so GGUF can't describe it")
    if spec["model"].get("byte_fallback") or "\u2581" in json.dumps(spec.get("normalizer")) + json.dumps(parts):
        return "llama", "default"
    raise PruneError("tokenizer: a BPE that is neither byte-level nor SentencePiece style (no ByteLevel, no "
                     "'\u2581' spaces): GGUF can't describe it")


def _flatten(part) -> list:
    if not part:
        return []
    if part["type"] == "Sequence":
        return [p for sub in part.get("pretokenizers", part.get("normalizers", [])) for p in _flatten(sub)]
    return [part]


def _prepends_space(spec) -> bool:
    """Whether text gets a leading '▁' (llama.cpp's add_space_prefix): a Prepend normalizer or a
    Metaspace pre-tokenizer that prepends."""
    parts = _flatten(spec.get("normalizer")) + _flatten(spec.get("pre_tokenizer"))
    return any(p["type"] == "Prepend" or (p["type"] == "Metaspace" and p.get("prepend_scheme", "always") != "never")
               for p in parts)


def _tokens(tokenizer, n_vocab: int, kind: str) -> tuple[list, list]:
    """The n_vocab token strings by id and their llama.cpp types; ids with no token fill as UNUSED."""
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {t.content: t for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    beyond = sorted(i for i in by_id if i >= n_vocab)
    if any(by_id[i] not in added for i in beyond):
        raise PruneError(f"tokenizer: {max(by_id) + 1} token ids, the model's embedding has {n_vocab} rows; "
                         "resize the embedding (model.resize_token_embeddings) first")
    if beyond:  # e.g. transformers' GGUF reader adds its class's default specials; no row, so never usable
        log.warning("tokenizer: added tokens %s have no embedding row and are left out of the GGUF",
                    [by_id[i] for i in beyond])
    tokens, types = [], []
    for i in range(n_vocab):
        token = by_id.get(i)
        tokens.append(token if token is not None else f"[PAD{i}]")
        if token is None:
            types.append(UNUSED)
        elif token == tokenizer.unk_token:
            types.append(UNKNOWN)
        elif token in added:
            types.append(CONTROL if added[token].special else USER_DEFINED)
        elif kind == "llama" and _BYTE_TOKEN.match(token):
            types.append(BYTE)
        else:
            types.append(NORMAL)
    return tokens, types
