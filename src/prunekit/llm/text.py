"""Token batches for calibration, and perplexity on a text.

Calibration: `n` windows of `seq_len` tokens drawn at random (seeded, without replacement)
from the tokenized text. Perplexity: the text tokenized once, scored in windows of `seq_len`
tokens moved by `stride` (default: windows that do not overlap). Where the tokenizer has a BOS
token, every window (calibration and evaluation) starts with it, as the model's inputs do in
use, and every token of the text is scored, a window's first predicted from BOS alone (as
lm-evaluation-harness's rolling windows do). Without a BOS token, a window's first token is
context only: non-overlapping windows score all others (the Wanda and SparseGPT papers'
protocol), and overlapping ones score every token after the text's first exactly once. The
protocol and the count of tokens scored are returned with the figure.
"""
import math

import torch

from prunekit._utils.validate import check_count
from prunekit.errors import PruneError
from prunekit.llm.blocks import model_device
from prunekit.llm.prune import check_token_ids


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """The text's token ids, one long 1-D LongTensor (no special tokens between pieces)."""
    if not isinstance(text, str) or not text.strip():
        raise PruneError("text must be a non-empty string")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False, verbose=False)["input_ids"]
    return ids[0].long()


def _prefix(tokenizer) -> list:
    """[BOS] where the tokenizer has one: each window starts as the model's inputs do in use
    (Gemma, Llama expect it; without it their first positions behave unlike any real input)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return [bos] if isinstance(bos, int) else []


def calibration(tokenizer, text: str, n: int = 64, seq_len: int = 512, seed: int = 0) -> torch.Tensor:
    """LongTensor (n, seq_len): n windows of the text (after the tokenizer's BOS token, where it
    has one), starts drawn with a seeded generator; windows do not overlap, and the text must
    hold n of them."""
    check_count("n", n, 1)
    check_count("seq_len", seq_len, 2)
    ids, prefix = tokenize(tokenizer, text), _prefix(tokenizer)
    width = seq_len - len(prefix)
    slots = ids.numel() // width
    if slots < n:
        raise PruneError(f"the calibration text has {ids.numel()} tokens: {n} windows of {width} need "
                         f"{n * width}; give more text, or lower n or seq_len")
    generator = torch.Generator().manual_seed(seed)
    spare = ids.numel() - slots * width
    offset = int(torch.randint(spare + 1, (1,), generator=generator))
    chosen = torch.randperm(slots, generator=generator)[:n].sort().values
    head = torch.tensor(prefix, dtype=torch.long)
    return torch.stack([torch.cat([head, ids[offset + s * width: offset + (s + 1) * width]]) for s in chosen.tolist()])


def _window_nll(model, ids: torch.Tensor, scored: int) -> float:
    """Summed negative log-likelihood of the last `scored` tokens of one window."""
    with torch.no_grad():
        logits = model(input_ids=ids.unsqueeze(0), use_cache=False).logits[0]
        # position i predicts token i+1: the last `scored` predictions are logits[-scored-1:-1]
        predicted = logits[-scored - 1:-1].float()
        return float(torch.nn.functional.cross_entropy(predicted, ids[-scored:], reduction="sum"))


def perplexity(model, tokenizer, text: str, *, seq_len: int = 512, stride: int | None = None,
               max_tokens: int | None = None) -> dict:
    """exp(mean NLL) of a causal LM over the text (see the module docstring); `max_tokens`
    scores only the text's first tokens. Returns the figure and its protocol."""
    check_count("seq_len", seq_len, 2)
    if not (callable(getattr(model, "can_generate", None)) and model.can_generate()):
        raise PruneError(f"perplexity needs a causal language model; {type(model).__name__} does not predict "
                         "the next token")
    prefix = _prefix(tokenizer)
    width = seq_len - len(prefix)  # text tokens per window
    stride = width if stride is None else check_count("stride", stride, 1)
    if stride > width:
        raise PruneError(f"stride ({stride}) must not exceed the {width} text tokens of a window: tokens would "
                         "go unscored")
    ids = tokenize(tokenizer, text)
    if max_tokens is not None:
        ids = ids[:check_count("max_tokens", max_tokens, 2)]
    if ids.numel() < 2:
        raise PruneError("the text is shorter than two tokens")
    check_token_ids(model, torch.cat([torch.tensor(prefix, dtype=torch.long), ids]), "the tokenizer's ids")
    device = model_device(model)
    ids, head = ids.to(device), torch.tensor(prefix, dtype=torch.long, device=device)
    lead = 0 if prefix else 1  # with BOS before it, a window's first token is predicted too
    was_training = model.training
    model.eval()
    total, count, windows, end_prev = 0.0, 0, 0, lead
    try:
        for start in range(0, ids.numel() - lead, stride):
            end = min(start + width, ids.numel())
            scored = end - max(end_prev, start + lead)
            if scored > 0:
                total += _window_nll(model, torch.cat([head, ids[start:end]]), scored)
                count, windows, end_prev = count + scored, windows + 1, end
            if end == ids.numel():
                break
    finally:
        model.train(was_training)
    return {"perplexity": math.exp(total / count), "nll": total / count, "tokens": count,
            "seq_len": seq_len, "stride": stride, "windows": windows, "bos": bool(prefix)}
