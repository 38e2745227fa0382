"""Recipes: YAML files that say what a whole run does (data, model, prune steps, fine-tuning,
evaluation, export, report), validated into typed configs (schema), migrated from older
versions (migrate), and run by `prunekit run` (run)."""
from prunekit.recipes.load import dump, load
from prunekit.recipes.run import run

__all__ = ["dump", "load", "run"]
