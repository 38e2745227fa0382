"""PNG plots: accuracy vs compression and speedup vs compression, one line per method."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from prunekit._utils.atomic import atomic_path  # noqa: E402

PLOTS = {"accuracy_vs_compression.png": ("accuracy", "test accuracy"),
         "speedup_vs_compression.png": ("speedup", "measured speedup (x)")}


def _by_method(runs):
    methods = {}
    for run in runs:
        methods.setdefault(run["method"], []).append(run)
    return {m: sorted(rs, key=lambda r: r["compression_ratio"]) for m, rs in methods.items()}


def write_plots(result: dict, out_dir) -> list:
    out_dir = Path(out_dir)
    written = []
    for filename, (key, label) in PLOTS.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, runs in _by_method(result["runs"]).items():
            ax.plot([r["compression_ratio"] for r in runs], [r[key] for r in runs], marker="o", label=method)
        reference = result["baseline"]["accuracy"] if key == "accuracy" else 1.0
        ax.axhline(reference, color="gray", linestyle="--", label="dense")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%gx"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xticks(sorted({round(1 / (1 - r["target_sparsity"]), 1) for r in result["runs"]}))
        ax.set_xlabel("compression ratio (prunable weights / nonzero)")
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(out_dir / filename) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        written.append(out_dir / filename)
    return written


def write_sensitivity_plot(curves: dict, path) -> None:
    """One line per layer: validation accuracy vs that layer's sparsity (search.sensitivity)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        if name != "dense":
            points = sorted(curve.items())
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=name)
    ax.axhline(curves["dense"], color="gray", linestyle="--", label="dense")
    ax.set_xlabel("sparsity of the one pruned layer")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_layer_plot(density: dict, path) -> None:
    """A heatmap: one row per pruned model, one column per layer, the fraction of the dense
    layer's weights left (removed channels and zeroed weights alike)."""
    rows = list(density)
    layers = list(next(iter(density.values())))
    values = [[density[r][layer] for layer in layers] for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(layers) + 3), 0.4 * len(rows) + 1.8))
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(len(rows)), rows, fontsize="small")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize="x-small", color="white" if v < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="weights left (of dense)")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
