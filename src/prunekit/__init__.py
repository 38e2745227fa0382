"""prunekit: prune PyTorch models and measure, honestly, what the pruning bought."""
from prunekit.deploy import to_sparse
from prunekit.errors import PruneError
from prunekit.masks import make_permanent, sparsity
from prunekit.measure import compare, measure
from prunekit.serialization import load, save
from prunekit.structured.prune import StructuredResult, prune_structured
from prunekit.unstructured.magnitude import PruneReport, prune_magnitude
from prunekit.unstructured.nm import prune_nm

__version__ = "0.1.0"

__all__ = ["PruneError", "PruneReport", "StructuredResult", "prune_magnitude", "prune_nm", "prune_structured",
           "make_permanent", "sparsity", "measure", "compare", "save", "load", "to_sparse", "__version__"]
