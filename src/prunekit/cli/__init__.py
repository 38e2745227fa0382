"""prunekit's command line: main.py builds it from one module per command."""
from prunekit.cli.main import main

__all__ = ["main"]
