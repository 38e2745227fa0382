"""A one-page, self-contained HTML report (plots inlined as base64)."""
import base64
import html
from pathlib import Path

from prunekit._utils.atomic import write_text
from prunekit.report.plots import PLOTS
from prunekit.report.table import COLUMNS, _cell

_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;"
          "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:49%}")


def write_html(result: dict, out_dir) -> Path:
    out_dir = Path(out_dir)
    base = result["baseline"]
    header = "".join(f"<th>{h}</th>" for _, h, _ in COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(k, f, run.get(k)))}</td>" for k, _, f in COLUMNS)
                   + "</tr>" for run in result["runs"])
    images = "".join(
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode((out_dir / name).read_bytes()).decode()}">'
        for name in PLOTS if (out_dir / name).exists())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>prunekit compare</title>"
            f"<style>{_STYLE}</style></head><body><h1>Magnitude vs structured pruning</h1>"
            f"<p>{html.escape(base['model'])} on {html.escape(base['dataset'])}: dense test accuracy "
            f"{base['accuracy']:.2%}, latency {base['latency_ms']:.2f} ms per batch, "
            f"{base['file_bytes'] / 1024:.0f} KiB on disk.</p>"
            f"<table><tr>{header}</tr>{rows}</table>"
            f"<p>Speedup is measured latency (interleaved repeats, median); the MACs ratio is theoretical. "
            f"Energy: {html.escape(base['energy']['method'])} — {html.escape(base['energy'].get('note', ''))}. "
            f"Compression = prunable weights / nonzero weights.</p>{images}</body></html>")
    path = out_dir / "report.html"
    write_text(path, page)
    return path
