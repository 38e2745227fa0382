"""prunekit: prune PyTorch models and measure, honestly, what the pruning bought."""
from .errors import PruneError
from .export import load, save
from .magnitude import PruneReport, prune_magnitude
from .masks import make_permanent, sparsity
from .measure import compare, measure
from .nm import prune_nm
from .structured import StructuredResult, prune_structured

__version__ = "0.1.0"

__all__ = ["PruneError", "PruneReport", "StructuredResult", "prune_magnitude", "prune_nm", "prune_structured",
           "make_permanent", "sparsity", "measure", "compare", "save", "load", "__version__"]
