"""Readable outputs of a run: a terminal table, PNG plots, a one-page HTML report."""
from prunekit.report.html import write_html
from prunekit.report.plots import write_plots
from prunekit.report.run_dir import write_report
from prunekit.report.table import comparison_table

__all__ = ["comparison_table", "write_plots", "write_html", "write_report"]
