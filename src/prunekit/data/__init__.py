"""Datasets: the built-in ones, fetched on purpose into $PRUNEKIT_HOME, and the user's own."""
from prunekit.data.sources import DATASETS, Dataset, Split, load

__all__ = ["DATASETS", "Dataset", "Split", "load"]
