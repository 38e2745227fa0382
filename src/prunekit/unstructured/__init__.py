"""Magnitude (unstructured) pruning: individual weights masked, globally or per layer; N:M
patterns; per-layer allocation (ERK, LAMP); exact k-selection at any scale."""
from prunekit.unstructured.allocate import (
           layer_sparsities,
           prune_allocated,
           prune_layers,
)
from prunekit.unstructured.magnitude import PruneReport, prune_magnitude, prune_rest
from prunekit.unstructured.nm import prune_nm

__all__ = ["PruneReport", "layer_sparsities", "prune_allocated", "prune_layers", "prune_magnitude",
           "prune_nm", "prune_rest"]
