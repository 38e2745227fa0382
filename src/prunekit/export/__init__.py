"""Saving and loading pruned models without pickle: safetensors tensors + JSON metadata."""
from .io import load, save

__all__ = ["save", "load"]
