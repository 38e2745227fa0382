"""Structured pruning: choose channels, heads or blocks, cut them, verify, repair."""
from prunekit.structured.prune import StructuredResult, channel_spaces, param_count, prune_structured

__all__ = ["StructuredResult", "channel_spaces", "param_count", "prune_structured"]
