"""Tables of docs/results/llm.md: one-shot pruning of Gemma-3 270M, calibration size, structured
cuts, MiniLM, streaming past an RSS cap, and the EfficientNet-Lite0 recovery."""
from .common import md, table

MAIN = "llm/llm-table-gemma3-n16.json"
SIZES = "llm/llm-table-gemma3-n*.json"
STRUCT = "llm/llm-structured-gemma3-n16.json"
MINILM = "llm/llm-table-minilm-n16.json"
STREAM = "llm/llm-stream.json"
RECOVERY = "pretrained-agreement/bench-pretrained-agreement.json"
# Wanda paper (Sun et al. 2024), LLaMA-2-7B WikiText perplexity.
PAPER_DENSE = 5.12
PAPER = {("magnitude", "0.5"): 14.89, ("sparsegpt", "0.5"): 6.51, ("wanda", "0.5"): 6.42,
         ("magnitude", "2:4"): 54.59, ("sparsegpt", "2:4"): 10.17, ("wanda", "2:4"): 11.02}
AIMS = {("sparsegpt", "0.5"): 1.5, ("wanda", "0.5"): 1.7, ("sparsegpt", "2:4"): 2.7, ("wanda", "2:4"): 4.0}
# The plain reference implementation (one pass, not block-sequential, 32 x 512 tokens), 135M model.
REFERENCE = {("sparsegpt", "0.5"): 2.0, ("wanda", "0.5"): 2.0, ("sparsegpt", "2:4"): 3.6, ("wanda", "2:4"): 7.4}
METHODS = ("magnitude", "wanda", "sparsegpt")


def setting(row) -> str:
    """"0.5", "2:4" or "0.7+owl": the sparsity setting a row names."""
    base = row["pattern"] or f"{row['sparsity']:g}"
    return base + ("+owl" if row.get("allocation") == "owl" else "")


def find(rows, method, where):
    return next((r for r in rows if r["method"] == method and setting(r) == where), None)


def dense(rows) -> float:
    return next(r["perplexity"] for r in rows if r["method"] == "dense")


def ppl(row, base) -> str:
    if row is None:
        return "–"
    value, ratio = row["perplexity"], row["perplexity"] / base
    shown = f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"
    return f"{shown} ({ratio:.2f}×)" if ratio < 100 else f"{shown} ({ratio:,.0f}×)"


@table("llm-oneshot", MAIN)
def oneshot(src):
    rows = src[MAIN]
    base = dense(rows)
    out = [("dense", f"{base:.2f}", "", "", "", f"{PAPER_DENSE}")]
    for method in METHODS:
        paper = " / ".join(f"{PAPER[(method, s)] / PAPER_DENSE:.2f}×" for s in ("0.5", "2:4"))
        out.append((method, *(ppl(find(rows, method, s), base) for s in ("0.5", "2:4", "0.7")),
                    f"{find(rows, method, '0.5')['seconds']:.0f} s", paper))
    return md(("method", "50 %", "2:4", "70 %", "time to prune (50 %)", "Wanda paper, LLaMA-2-7B: 50 % / 2:4"), out)


def _goal(rows, method, where, base):
    row, magnitude = find(rows, method, where), find(rows, "magnitude", where)
    ratio, share = row["perplexity"] / base, (row["perplexity"] - base) / (magnitude["perplexity"] - base)
    aim, reference = AIMS[(method, where)], REFERENCE[(method, where)]
    return (f"{method} at {'50 %' if where == '0.5' else where}", f"{ratio:.2f}×", f"≤ {aim}×",
            "met" if ratio <= aim else "not met", f"{reference}× ({'beaten' if ratio < reference else 'not beaten'})",
            f"{share:.4f}", "met" if share <= 1 / 3 else "not met")


@table("llm-goals", MAIN)
def goals(src):
    rows = src[MAIN]
    base = dense(rows)
    out = [_goal(rows, m, s, base) for s in ("0.5", "2:4") for m in ("sparsegpt", "wanda")]
    return md(("setting", "perplexity × dense", "aim", "", "reference run, 135M model", "increase ÷ magnitude's increase",
               "≤ 1/3"), out)


@table("llm-owl", MAIN)
def owl(src):
    rows = src[MAIN]
    base = dense(rows)
    out = [(label, ppl(find(rows, "wanda", where), base), f"{find(rows, 'wanda', where)['seconds']:.0f} s")
           for label, where in (("uniform", "0.7"), ("OWL", "0.7+owl"))]
    out.append(("SparseGPT, uniform (for scale)", ppl(find(rows, "sparsegpt", "0.7"), base),
                f"{find(rows, 'sparsegpt', '0.7')['seconds']:.0f} s"))
    return md(("Wanda at 70 %", "perplexity (× dense)", "time to prune"), out)


@table("llm-calibration", MAIN, SIZES)
def calibration(src):
    base = dense(src[MAIN])
    runs = {f"llm/llm-table-gemma3-n{n}.json": n for n in (4, 16, 64)}
    out = []
    for path, n in runs.items():
        rows = src[path]
        cells = [(find(rows, m, s)) for m, s in (("wanda", "0.5"), ("sparsegpt", "0.5"), ("wanda", "2:4"))]
        out.append((f"{n} × 512", *(f"{ppl(r, base)}, {r['seconds']:.0f} s" if r else "–" for r in cells)))
    return md(("calibration", "Wanda 50 %", "SparseGPT 50 %", "Wanda 2:4"), out)


def _structured_label(row) -> str:
    if row["method"] == "dense":
        return "dense"
    cut = row["structured"]
    kept = row.get("heads_after")  # (query, key/value) heads left: the nearest count the config accepts
    heads = f"heads={cut.get('heads', 0):g}" + (f" ({kept[0]} of 4 query heads kept)" if kept else "")
    parts = [f"{cut['layers']} blocks" if "layers" in cut else "",
             heads if "heads" in cut else "", f"ffn={cut['ffn']:g}" if "ffn" in cut else ""]
    return ", ".join(p for p in parts if p) + (", recovered" if cut.get("recover") else "")


@table("llm-structured", STRUCT)
def structured(src):
    rows = src[STRUCT]
    base = dense(rows)
    out = []
    for r in rows[1:]:
        out.append((_structured_label(r), f"{r['params_after'] / r['params_before']:.2f}", ppl(r, base),
                    f"{r['tokens_per_s']:.1f} / {r['dense_tokens_per_s']:.1f} ({r['speedup']:.2f}×)",
                    f"{r['params_before'] / r['params_after']:.2f}×", f"{r['seconds']:.0f} s"))
    return md(("cut", "parameters left", "perplexity (× dense)", "generation tokens/s: cut / dense (speedup)",
               "speedup bound: parameters before / after", "time to prune"), out)


@table("llm-encoder", MINILM)
def encoder(src):
    out = [(r["method"] if r["method"] == "dense" else f"{r['method']} {setting(r)}", f"{r['cosine']:.3f}",
            f"{r['retrieval_top1']:.3f}", f"{r['retrieval_in_top10']:.3f}") for r in src[MINILM]]
    return md(("MiniLM-L6", "embedding cosine to dense", "retrieval: same top-1", "dense top-1 in top-10"), out)


@table("llm-stream", STREAM)
def stream(src):
    d, gib = src[STREAM], 2 ** 30
    out = [(f"`llm.{r['path']}`", f"{r['peak_rss'] / gib:.2f} GiB", f"{d['cap_bytes'] / gib:.2f} GiB",
            "under" if r["peak_rss"] < d["cap_bytes"] else "over", f"{r['seconds']:.0f} s") for r in d["rows"]]
    return md(("path", "peak RSS", f"cap (fp32 weights {d['weights_bytes'] / gib:.2f} GiB)", "", "time"), out)


@table("pretrained-recovery", RECOVERY)
def recovery(src):
    rows = src[RECOVERY].get("recovery", [])
    by = {(r["ratio"], r["recover"]): r for r in rows}
    out = [(f"{ratio:.0%}", f"{by[(ratio, False)]['params_after'] / by[(ratio, False)]['params_before']:.2f}",
            *(f"{100 * by[(ratio, rec)]['top1_agreement']:.0f} % / {100 * by[(ratio, rec)]['top5_contains_top1']:.0f} %"
              for rec in (False, True)))
           for ratio in sorted({r["ratio"] for r in rows})]
    return md(("channels removed (L2)", "parameters left", "no recovery: top-1 / top-5 agreement",
               "least-squares recovery: top-1 / top-5"), out)


@table("pretrained-fit-bound", RECOVERY)
def fit_bound(src):
    rows = src[RECOVERY].get("fit_bound", [])

    def spread(key):
        values = sorted(r[key] for r in rows)
        return f"{values[len(values) // 2]:.2f} ({values[0]:.2f} to {values[-1]:.2f})"
    return md(("layers re-fitted at 30 %", "relative error as sliced: median (range)",
               "best least-squares re-fit: median (range)"),
              [(len(rows), spread("sliced_error"), spread("refit_error"))])


EIGHT_B = "llm/llm-8b-*.json"
RANKS = "llm/llm-ranks-gemma3.json"


def _eight_b_row(d, r):
    """A whole streamed row, or a bound from its first blocks (time only, nothing written)."""
    gib, size = 2 ** 30, d["weights_bytes"]
    if "bound_seconds" in r:
        return (r["row"], f"≤ {r['bound_seconds'] / 60:.0f} min (bound: {r['blocks_timed']} of 32 blocks timed, "
                f"{max(r['block_seconds']):.0f} s the slowest)", f"{r['peak_rss'] / gib:.2f} GiB",
                f"{r['peak_rss'] / size:.2f}", f"{r['sparsity']:.3f} (last block)", "not written (bound)")
    load = r["load"]
    return (r["row"], f"{r['seconds'] / 60:.1f} min", f"{r['peak_rss'] / gib:.2f} GiB", f"{r['peak_rss'] / size:.2f}",
            f"{r['sparsity']:.3f}", f"yes, {load['dtype'].removeprefix('torch.')}, block 0 up_proj "
            f"{load['block0_up_zeros']:.3f} zero")


@table("llm-8b", EIGHT_B)
def eight_b(src):
    from .common import RUNS
    out = []
    for path in sorted((RUNS / "llm").glob("llm-8b-*.json")):
        d = src[f"llm/{path.name}"]
        out += [(*_eight_b_row(d, r), d.get("note") or "alone") for r in d["rows"]]
    return md(("streamed", "time", "peak RSS", "of the model's bytes", "sparsity", "from_pretrained reads it",
               "machine"), out)


@table("llm-ranks", RANKS)
def ranks(src):
    d = src[RANKS]
    out = [(f"{r['ranks']} × 1 thread", r["repeat"] + 1, f"{r['seconds']:.1f} s", f"{r['sparsity']:.3f}",
            "yes" if r["same_masks_as_last_one_rank_run"] else "no") for r in d["rows"]]
    out.append(("2 ranks over 1 (fastest of each)", "", f"{d['speedup_2_over_1']:.2f}×", "", ""))
    return md(("Gemma-3 270M, Wanda 50 %", "run", "llm.prune time", "sparsity", "masks = 1-rank masks"), out)
