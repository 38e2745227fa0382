"""A one-page, self-contained HTML report: no network, plots inlined as base64 PNGs, readable
on a phone (the table scrolls sideways, the plots fit the width).

Sections: the dense baseline; the five metrics per pruned model; accuracy and measured speedup
against compression; per-layer sparsity; per-layer sensitivity; the recipe; the environment.
A section whose data the run does not have says so and how to get it."""
import base64
import html
import json
from pathlib import Path

from prunekit._utils.atomic import write_text
from prunekit.report.plots import PLOTS
from prunekit.report.table import COLUMNS, _cell

LAYER_PLOT, SENSITIVITY_PLOT = "layer_sparsity.png", "sensitivity.png"

_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222;line-height:1.4}"
          ".scroll{overflow-x:auto}table{border-collapse:collapse}"
          "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}"
          "td:first-child,th:first-child{text-align:left}img{max-width:49%;height:auto}"
          "pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:90%}"
          "@media (max-width:700px){img{max-width:100%}h1{font-size:1.4em}}")


def write_html(result: dict, out_dir, *, recipe: str | None = None) -> Path:
    """OUT_DIR/report.html from `result` and the plots already in OUT_DIR."""
    out_dir = Path(out_dir)
    sections = [_baseline(result), _metrics(result), _plots(out_dir, list(PLOTS), "Accuracy and speed against compression",
                                                            "no plots: run `prunekit report` on this folder"),
                _plots(out_dir, [LAYER_PLOT], "Per-layer sparsity",
                       "no saved models in models/ to read the layers from"),
                _plots(out_dir, [SENSITIVITY_PLOT], "Per-layer sensitivity of the dense model",
                       "not computed: `prunekit report RUN_DIR` computes it on the validation split"),
                _pre("Recipe", recipe or json.dumps(result.get("config", {}), indent=2)),
                _pre("Environment", "\n".join(f"{k}: {v}" for k, v in result.get("environment", {}).items())
                     or "not recorded (a run from before prunekit recorded it)")]
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>prunekit report: {html.escape(result['baseline']['model'])}</title><style>{_STYLE}</style>"
            "</head><body><h1>What the pruning bought</h1>" + "".join(sections) + "</body></html>")
    path = out_dir / "report.html"
    write_text(path, page)
    return path


def _baseline(result) -> str:
    base = result["baseline"]
    return (f"<p id='baseline'>{html.escape(base['model'])} on {html.escape(base['dataset'])}: dense test accuracy "
            f"{base['accuracy']:.2%}, latency {base['latency_ms']:.2f} ms per batch, "
            f"{base['file_bytes'] / 1024:.0f} KiB on disk, {base['params']:,} parameters.</p>")


def _metrics(result) -> str:
    base = result["baseline"]
    header = "".join(f"<th>{h}</th>" for _, h, _ in COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(k, f, run.get(k)))}</td>" for k, _, f in COLUMNS)
                   + "</tr>" for run in result["runs"])
    return (f"<h2>The five metrics</h2><div class='scroll'><table id='metrics'><tr>{header}</tr>{rows}</table></div>"
            "<p>Compression = prunable weights / nonzero weights. Speedup is measured latency (interleaved "
            "repeats, median); masked weights run dense, \"sparse kernels\" runs the same weights on "
            "pk.to_sparse's kernels; the MACs ratio is theoretical. Memory = peak bytes of live tensors. "
            f"Energy: {html.escape(base['energy']['method'])} — {html.escape(base['energy'].get('note', ''))}.</p>")


def _plots(out_dir, names, title, missing) -> str:
    images = "".join(f'<img alt="{name[:-4].replace("_", " ")}" src="data:image/png;base64,'
                     f'{base64.b64encode((out_dir / name).read_bytes()).decode()}">'
                     for name in names if (out_dir / name).exists())
    return f"<h2>{title}</h2>" + (f"<div>{images}</div>" if images else f"<p>{missing}</p>")


def _pre(title, text) -> str:
    return f"<h2>{title}</h2><pre>{html.escape(text)}</pre>"
