"""prunekit: prune PyTorch models and measure, honestly, what the pruning bought."""
from .errors import PruneError
from .magnitude import PruneReport, prune_magnitude
from .masks import make_permanent, sparsity

__version__ = "0.1.0"

__all__ = ["PruneError", "PruneReport", "prune_magnitude", "make_permanent", "sparsity", "__version__"]
