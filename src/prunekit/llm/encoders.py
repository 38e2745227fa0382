"""What pruning keeps of a sentence encoder (MiniLM, BERT): its embeddings compared with the
dense model's on real sentences.

Embeddings are mean-pooled over the tokens (padding masked) and L2-normalised, as
sentence-transformers' all-MiniLM-L6-v2 is used. Two figures: the mean cosine between each
sentence's dense and pruned embedding, and retrieval agreement: the first half of the
sentences are queries, the second half the corpus; the share of queries whose nearest corpus
sentence is the same under both models (and how often the dense top-1 stays in the pruned
top-10).
"""
import re

import torch

from prunekit._utils.validate import check_count
from prunekit.errors import PruneError
from prunekit.llm.blocks import model_device


def sentences(text: str, n: int = 512, min_chars: int = 40, max_chars: int = 300) -> list:
    """The first `n` distinct prose sentences of a text (one line each, of a readable length):
    a repeated sentence would make retrieval's nearest neighbour ambiguous."""
    check_count("n", n, 2)
    flat = re.sub(r"\s+", " ", text)
    found = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat)]
    found = list(dict.fromkeys(s for s in found if min_chars <= len(s) <= max_chars
                               and re.search(r"[a-z]{3,} [a-z]{3,}", s)))
    if len(found) < n:
        raise PruneError(f"the text has {len(found)} sentences of {min_chars}-{max_chars} characters; {n} needed")
    return found[:n]


def embed(model, tokenizer, texts: list, batch: int = 64, max_length: int = 128) -> torch.Tensor:
    """(len(texts), hidden) mean-pooled, L2-normalised embeddings."""
    device, out = model_device(model), []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(texts), batch):
            enc = tokenizer(texts[start:start + batch], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def agreement(dense: torch.Tensor, pruned: torch.Tensor) -> dict:
    """Mean cosine of matching rows; retrieval top-1 agreement and dense-top-1-in-pruned-top-10."""
    if dense.shape != pruned.shape or len(dense) < 4:
        raise PruneError("agreement needs two embedding matrices of the same shape, at least 4 rows")
    half = len(dense) // 2

    def ranking(emb):
        return (emb[:half] @ emb[half:].t()).argsort(dim=1, descending=True, stable=True)
    dense_rank, pruned_rank = ranking(dense), ranking(pruned)
    top1 = dense_rank[:, :1]
    return {"cosine": float((dense * pruned).sum(1).mean()),
            "retrieval_top1": float((pruned_rank[:, 0] == top1[:, 0]).float().mean()),
            "retrieval_in_top10": float((pruned_rank[:, :10] == top1).any(1).float().mean()),
            "queries": half, "corpus": len(dense) - half}
