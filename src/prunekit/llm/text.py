"""Token batches for calibration, and perplexity on a text.

Calibration: `n` windows of `seq_len` tokens drawn at random (seeded, without replacement)
from the tokenized text. Perplexity: the text tokenized once, scored in windows of `seq_len`
tokens moved by `stride`. The default, stride = seq_len, is the papers' protocol (Wanda,
SparseGPT): windows that do not overlap, each scoring its tokens after its first. With
stride < seq_len the windows overlap and every token after the text's first is scored exactly
once, with the context its window gives. The protocol and the count of tokens scored are
returned with the figure, so results say how they were measured.
"""
import math

import torch

from prunekit._utils.validate import check_count
from prunekit.errors import PruneError
from prunekit.llm.blocks import model_device


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """The text's token ids, one long 1-D LongTensor (no special tokens between pieces)."""
    if not isinstance(text, str) or not text.strip():
        raise PruneError("text must be a non-empty string")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False, verbose=False)["input_ids"]
    return ids[0].long()


def calibration(tokenizer, text: str, n: int = 64, seq_len: int = 512, seed: int = 0) -> torch.Tensor:
    """LongTensor (n, seq_len): n windows of the text, starts drawn with a seeded generator;
    windows do not overlap where the text is long enough, and the text must hold n of them."""
    check_count("n", n, 1)
    check_count("seq_len", seq_len, 2)
    ids = tokenize(tokenizer, text)
    slots = ids.numel() // seq_len
    if slots < n:
        raise PruneError(f"the calibration text has {ids.numel()} tokens: {n} windows of {seq_len} need "
                         f"{n * seq_len}; give more text, or lower n or seq_len")
    generator = torch.Generator().manual_seed(seed)
    spare = ids.numel() - slots * seq_len
    offset = int(torch.randint(spare + 1, (1,), generator=generator))
    chosen = torch.randperm(slots, generator=generator)[:n].sort().values
    return torch.stack([ids[offset + s * seq_len: offset + (s + 1) * seq_len] for s in chosen.tolist()])


def _window_nll(model, ids: torch.Tensor, scored: int) -> float:
    """Summed negative log-likelihood of the last `scored` tokens of one window."""
    with torch.no_grad():
        logits = model(input_ids=ids.unsqueeze(0), use_cache=False).logits[0].float()
    targets = ids[1:]
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    nll = -logprobs.gather(1, targets.unsqueeze(1)).squeeze(1)
    return float(nll[-scored:].sum())


def perplexity(model, tokenizer, text: str, *, seq_len: int = 512, stride: int | None = None,
               max_tokens: int | None = None) -> dict:
    """exp(mean NLL) of a causal LM over the text (see the module docstring); `max_tokens`
    scores only the text's first tokens. Returns the figure and its protocol."""
    check_count("seq_len", seq_len, 2)
    if not (callable(getattr(model, "can_generate", None)) and model.can_generate()):
        raise PruneError(f"perplexity needs a causal language model; {type(model).__name__} does not predict "
                         "the next token")
    stride = seq_len if stride is None else check_count("stride", stride, 1)
    if stride > seq_len:
        raise PruneError(f"stride ({stride}) must not exceed seq_len ({seq_len}): tokens would go unscored")
    ids = tokenize(tokenizer, text)
    if max_tokens is not None:
        ids = ids[:check_count("max_tokens", max_tokens, 2)]
    if ids.numel() < 2:
        raise PruneError("the text is shorter than two tokens")
    ids = ids.to(model_device(model))
    was_training = model.training
    model.eval()
    total, count, windows, end_prev = 0.0, 0, 0, 1
    try:
        for start in range(0, ids.numel() - 1, stride):
            end = min(start + seq_len, ids.numel())
            scored = end - max(end_prev, start + 1)
            if scored > 0:
                total += _window_nll(model, ids[start:end], scored)
                count, windows, end_prev = count + scored, windows + 1, end
            if end == ids.numel():
                break
    finally:
        model.train(was_training)
    return {"perplexity": math.exp(total / count), "nll": total / count, "tokens": count,
            "seq_len": seq_len, "stride": stride, "windows": windows}
