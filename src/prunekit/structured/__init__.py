"""Structured pruning: choose channels, heads or blocks, cut them, verify, repair."""
from prunekit.structured.choose import Options, choose_layer
from prunekit.structured.prune import (
                                       StructuredResult,
                                       channel_spaces,
                                       nothing_to_prune,
                                       param_count,
                                       prune_structured,
                                       prune_units,
)

__all__ = ["Options", "StructuredResult", "channel_spaces", "choose_layer", "nothing_to_prune", "param_count",
           "prune_structured", "prune_units"]
