"""prunekit inside the training code people already have: `Pruner` for a plain loop, and
callbacks for the Hugging Face Trainer (integrations.hf) and PyTorch Lightning
(integrations.lightning), each imported only when used."""
from prunekit.integrations.pruners import METHODS, Pruner

__all__ = ["METHODS", "Pruner"]
