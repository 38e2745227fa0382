"""The comparison as a rich table."""
from rich.table import Table

COLUMNS = [("method", "method", "{}"), ("target_sparsity", "sparsity", "{:.0%}"),
           ("compression_ratio", "compression", "{:.1f}x"), ("accuracy", "test acc", "{:.2%}"),
           ("accuracy_retention", "retention", "{:.3f}"), ("speedup", "speedup", "{:.2f}x"),
           ("speedup_sparse_kernels", "sparse kernels", "{:.2f}x"),
           ("theoretical_speedup", "MACs ratio", "{:.2f}x"), ("memory_reduction", "memory", "{:.2f}x"),
           ("energy_efficiency", "energy*", "{:.2f}x"), ("size_bytes", "file KiB", "{}")]


def _cell(key, fmt, value):
    if value is None:
        return "-"
    if key == "size_bytes":
        return f"{value / 1024:.0f}"
    return fmt.format(value)


def comparison_table(result: dict) -> Table:
    base = result["baseline"]
    title = (f"{base['model']} on {base['dataset']}: dense test accuracy {base['accuracy']:.2%}, "
             f"{base['latency_ms']:.2f} ms per batch, {base['file_bytes'] / 1024:.0f} KiB")
    table = Table(title=title, caption="speedup = measured latency ratio (interleaved runs), masked weights run dense; "
                                       "sparse kernels = the same weights on pk.to_sparse's kernels; "
                                       "MACs ratio = theoretical; *energy: " + base["energy"]["method"])
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="left" if header == "method" else "right")
    for run in result["runs"]:
        table.add_row(*[_cell(key, fmt, run.get(key)) for key, _, fmt in COLUMNS])
    return table
