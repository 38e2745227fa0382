"""compare's methods, one module per family; importing this package registers them all."""
from prunekit.experiments.methods import oneshot, searched, training  # noqa: F401  (registers the methods)
from prunekit.experiments.methods.context import Context
from prunekit.experiments.methods.registry import (
    METHODS,
    fixed_sparsity,
    get,
    list_methods,
    register,
    trains,
)

__all__ = ["METHODS", "Context", "fixed_sparsity", "get", "list_methods", "register", "trains"]
