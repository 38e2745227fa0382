"""Readable outputs of a comparison: a terminal table, PNG plots, a one-page HTML report."""
from prunekit.report.html import write_html
from prunekit.report.plots import write_plots
from prunekit.report.table import comparison_table

__all__ = ["comparison_table", "write_plots", "write_html"]
