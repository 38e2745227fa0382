"""Every generated table, by NAME: TABLES[name] = (builder, JSON source patterns).

One module per group of results pages; each builder reads only the JSON files it declares
(paths under docs/results/runs/), so every number in a generated table comes from JSON.
"""
from . import claims, deploy, llm, magnitude, search, structured  # noqa: F401  (registers the tables)
from .common import ROOT, TABLES

__all__ = ["ROOT", "TABLES"]
