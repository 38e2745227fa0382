"""prunekit's command line."""
from prunekit.cli.main import main

__all__ = ["main"]
