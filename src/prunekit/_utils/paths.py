"""Where prunekit keeps its cache (datasets, trained reference models)."""
import os
from pathlib import Path


def home() -> Path:
    """$PRUNEKIT_HOME, default ~/.cache/prunekit; created on first use."""
    root = Path(os.environ.get("PRUNEKIT_HOME", Path.home() / ".cache" / "prunekit"))
    root.mkdir(parents=True, exist_ok=True)
    return root
