"""Transformers and LLMs: one-shot Wanda, SparseGPT and magnitude pruning (unstructured or N:M,
uniform or OWL), block by block on calibration text; perplexity; offline loading.

    from prunekit import llm
    model, tokenizer = llm.load("path/to/hf-folder")          # or a .gguf file
    batches = llm.calibration(tokenizer, text, n=64, seq_len=512, seed=0)
    llm.prune(model, batches, method="wanda", sparsity=0.5)    # pattern="2:4", allocation="owl"
    llm.prune_structured(model, batches, heads=0.25, ffn=0.2, layers=2, recover=True)   # experts=0.25 (MoE)
    llm.perplexity(model, tokenizer, other_text)
"""
from prunekit.llm.encoders import agreement, embed, sentences
from prunekit.llm.experts import prune_experts
from prunekit.llm.load import load
from prunekit.llm.methods import METHODS
from prunekit.llm.prune import LLMPruneReport, prune
from prunekit.llm.sharded import prune_sharded
from prunekit.llm.structured import StructuredLLMReport, prune_structured
from prunekit.llm.text import calibration, perplexity

__all__ = ["METHODS", "LLMPruneReport", "StructuredLLMReport", "agreement", "calibration", "embed", "load",
           "perplexity", "prune", "prune_experts", "prune_sharded", "prune_structured", "sentences"]
