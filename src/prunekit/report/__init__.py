"""Readable outputs of a comparison: a terminal table, PNG plots, a one-page HTML report."""
from .html import write_html
from .plots import write_plots
from .table import comparison_table

__all__ = ["comparison_table", "write_plots", "write_html"]
