"""What structured_coverage.py prints: one row per model and ratio, and the summary counts."""


def _cell(record):
    if record is None:
        return "-"
    if record["status"] == "ok":
        return "ok"
    return record["status"] if record["status"] != "error" else f"ERR {record['error']}"


def _ratio(record, key):
    before, after = record.get(f"{key}_before"), record.get(f"{key}_after")
    return f"{after / before:.2f}" if before and after is not None else "-"


def _secs(record):
    return f"{record['seconds']:.1f}" if record and record.get("seconds") is not None else "-"


def print_row(name, ratio, by_tool):
    pk, tp = by_tool.get("prunekit"), by_tool.get("torch_pruning")
    print(f"{name:>38} {ratio:>5} | {_ratio(pk or {}, 'params'):>5} {_ratio(pk or {}, 'macs'):>5} "
          f"{_secs(pk):>6} | {_ratio(tp or {}, 'params'):>5} {_ratio(tp or {}, 'macs'):>5} "
          f"{_secs(tp):>6} | pk: {_cell(pk)[:70]} | tp: {_cell(tp)[:70]}", flush=True)


STATUSES = ("ok", "error", "no reduction", "timeout")


def summary(records, tools, ratios):
    """Per ratio and tool: models pruned correctly out of those tried (a model whose dense
    forward fails is skipped, not tried), and the count of each status."""
    skipped = sorted({r["model"] for r in records if r["status"] == "skipped"})
    models = sorted({r["model"] for r in records} - set(skipped))
    status = {(r["model"], r["tool"], r["ratio"]): r["status"] for r in records}
    lines = []
    names = {"prunekit": "prunekit", "torch_pruning": "Torch-Pruning"}
    for ratio in ratios:
        parts = []
        for t in tools:
            got = [status.get((m, t, ratio)) for m in models]
            counts = ", ".join(f"{s} {got.count(s)}" for s in STATUSES)
            parts.append(f"{names[t]}: {got.count('ok')}/{len(models)} ({counts})")
        lines.append(f"ratio {ratio}: " + "; ".join(parts) + " models pruned correctly")
    parts = [f"{names[t]}: {sum(all(status.get((m, t, q)) == 'ok' for q in ratios) for m in models)}"
             f"/{len(models)}" for t in tools]
    lines.append("all ratios: " + "; ".join(parts) + " models pruned correctly")
    if skipped:
        lines.append(f"skipped (dense model does not run on the input given): {', '.join(skipped)}")
    return lines
