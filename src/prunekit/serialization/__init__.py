"""Saving and loading pruned models without pickle: safetensors tensors + JSON metadata."""
from prunekit.serialization.io import load, save

__all__ = ["save", "load"]
