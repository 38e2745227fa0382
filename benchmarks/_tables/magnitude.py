"""Tables of the magnitude-pruning results: make demo, global threshold, Han et al., gradual, lottery, 50x."""
import math

from .common import MIB, bold, md, mean_std, pm, secs, signed, table

# ---- make demo: docs/results/demo.md and the README ----------------------------------------

DEMO = "demo/compare-lenet5-mnist.json"


@table("demo", DEMO)
def demo(src):
    d = src[DEMO]
    base, cfg = d["baseline"], d["config"]
    head = (f"Dense {base['model']} on {base['dataset']} ({cfg['epochs']} epochs, seed {cfg['seed']}): "
            f"test accuracy {100 * base['accuracy']:.2f} %, {base['latency_ms']:.2f} ms per batch of "
            f"{cfg['latency_batch']} on {cfg['threads']} threads, {base['file_bytes'] / 1024:.0f} KiB on disk; "
            f"{cfg['finetune_epochs']} fine-tuning epoch per point.")
    rows = [(r["method"], f"{100 * r['target_sparsity']:.0f} %", f"{r['compression_ratio']:.1f}x",
             f"{100 * r['accuracy']:.2f} %", f"{r['accuracy_retention']:.3f}", f"{r['speedup']:.2f}x",
             _sparse_cell(r), f"{r['theoretical_speedup']:.2f}x", f"{r['memory_reduction']:.2f}x",
             f"{r['energy_efficiency']:.2f}x", f"{r['size_bytes'] / 1024:.0f}") for r in d["runs"]]
    return head + "\n\n" + md(("method", "sparsity", "compression", "test acc", "retention", "speedup (measured)",
                               "on sparse kernels", "MACs ratio", "memory", "energy (estimate)", "file KiB"), rows)


def _sparse_cell(run) -> str:
    """The magnitude rows' speedup on pk.to_sparse's kernels; structured rows are dense already."""
    return f"{run['speedup_sparse_kernels']:.2f}x" if "speedup_sparse_kernels" in run else "-"


# ---- global threshold at scale --------------------------------------------------------------

GT = "global-threshold/bench-global-threshold.json"
GT_METHODS = ("prunekit", "torch_global_unstructured", "torch_quantile")


def _size(n) -> str:
    """10485760 -> "10M", 1006632960 -> "1B": the nearest power of ten, as the script's --sizes name it."""
    e = round(math.log10(n))
    return f"{10 ** (e - 9)}B" if e >= 9 else f"{10 ** (e - 6)}M"


def _gt_cell(r, sparsity=0.9) -> str:
    if r.get("error"):
        return r["error"]
    cell = f"{secs(r['seconds'])}, {r['extra_peak_bytes'] / MIB:.0f} MiB"
    short = round(sparsity * r["weights"]) - r["zeros"]
    if r["method"] == "prunekit" and r["weights"] >= 5e8:
        cell += f" ({r['extra_peak_bytes'] / r['weights']:.1f} bytes/weight, the mask itself)"
    if short:
        cell += f", {short} weight{'s' if short > 1 else ''} short"
    return cell


@table("global-threshold", GT)
def global_threshold(src):
    by = {}
    for r in src[GT]:
        by.setdefault(_size(r["weights"]), {})[r["method"]] = r
    rows = [(size, *(_gt_cell(cells[m]) for m in GT_METHODS)) for size, cells in by.items()]
    return md(("weights", "prunekit", "`torch.nn.utils.prune.global_unstructured`", "`torch.quantile` threshold"),
              rows)


def gt_at(src, size="100M"):
    by = {r["method"]: r for r in src[GT] if _size(r["weights"]) == size}
    pk, tu = by["prunekit"], by["torch_global_unstructured"]
    return pk, tu, tu["seconds"] / pk["seconds"], pk["extra_peak_bytes"] / tu["extra_peak_bytes"]


# ---- Han et al. 2015 ------------------------------------------------------------------------

HAN = "han2015-lenet300/bench-han2015.json"


@table("han2015", HAN)
def han2015(src):
    d = src[HAN]
    xs = sorted({int(k.split("@")[1][:-1]) for k in d["summary"] if "@" in k})
    paper = d["paper"]
    header = ("", "dense", *(bold(f"{x}x", x == paper["compression"]) for x in xs))
    rows = [("paper (Han et al. 2015)", paper["dense_error"],
             *(bold(paper["pruned_error"], True) if x == paper["compression"] else "" for x in xs))]
    for scope, label in (("global", "prunekit, global"), ("layer", "prunekit, layer-wise")):
        cells = [pm([r[f"{scope}@{x}x"] for r in d["runs"]], unit="") for x in xs]
        cells = [bold(c, scope == "global" and x == paper["compression"]) for c, x in zip(cells, xs)]
        rows.append((label, pm([r["dense"] for r in d["runs"]], unit=""), *cells))
    return md(header, rows)


# ---- lottery tickets ------------------------------------------------------------------------

LOT1D = "lottery-tickets/bench-lottery-mnist1d.json"
LOT300 = "lottery-tickets/bench-lottery-lenet300-seed2.json"


@table("lottery-mnist1d", LOT1D)
def lottery_mnist1d(src):
    d = src[LOT1D]
    runs, paper = d["mnist1d"]["runs"], d["paper"]["mnist1d"]
    last = [seed[-1] for seed in runs]
    left = last[0]["weights_left"]
    diffs = [r["test"] - r["random-mask"]["test"] for r in last]
    lo, hi = paper["ticket_91"]
    rows = [("paper", f"≈ {paper['dense']:.0f} %", f"{lo:.0f}-{hi:.0f} %", f"≈ {paper['random_91']:.0f} %", ""),
            ("prunekit", pm((seed[0]["test"] for seed in runs), nd=1), bold(pm((r["test"] for r in last), nd=1)),
             pm((r["random-mask"]["test"] for r in last), nd=1),
             f"{bold(signed(mean_std(diffs)[0], 1))} (per seed {', '.join(signed(x, 1) for x in diffs)})")]
    return md(("test accuracy", "dense", f"ticket, {left:.1f} % of weights left ({100 - left:.1f} % sparse)",
               "random mask, same counts", "ticket − random"), rows)


@table("lottery-mnist1d-rounds", LOT1D)
def lottery_mnist1d_rounds(src):
    rows = [(s["round"], f"{s['weights_left']:.1f} %", f"{s['test']['mean']:.2f} ± {s['test']['std']:.2f} %",
             f"{s['random-mask']['mean']:.2f} ± {s['random-mask']['std']:.2f} %" if "random-mask" in s else "")
            for s in src[LOT1D]["mnist1d"]["summary"]]
    return md(("round", "weights left", "ticket, test accuracy", "random mask"), rows)


@table("lottery-lenet300", LOT300)
def lottery_lenet300(src):
    d = src[LOT300]
    (run,) = d["lenet300"]["runs"]
    rows = [(r["round"], f"{r['weights_left']:.1f} %", f"{r['test']:.2f} %",
             f"{r['reinit']['test']:.2f} %" if "reinit" in r else "") for r in run]
    seeds = ", ".join(map(str, d["seeds"]))
    return md(("round", "weights left", f"ticket (seed {seeds})", "same masks, random re-initialisation"), rows)


# ---- gradual vs one-shot --------------------------------------------------------------------

GVO = "gradual-vs-oneshot/bench-gradual-vs-oneshot"
GVO_MAIN = {"LeNet-300-100": (("lenet300", [f"{GVO}-lenet300-end05.json"]),),
            "LeNet-5": (("lenet5", [f"{GVO}-lenet5-end05-{s}-s{i}.json" for s in (95, 98) for i in range(3)]),)}
GVO_EARLY = {"LeNet-300-100 (last epoch kept)": (("lenet300", [f"{GVO}.json"]),),
             "LeNet-5 (best epoch after the schedule)":
                 (("lenet5", [f"{GVO}-lenet5-bestafter-s0.json", f"{GVO}-lenet5-bestafter-s12.json"]),)}


def _gvo_merge(src, spec):
    """{seed: {key: error}} over the files (a seed split over files is merged)."""
    seeds = {}
    for model, paths in spec:
        for path in paths:
            d = src[path]
            for seed, run in zip(d["args"]["seeds"].split(","), d[model]["runs"]):
                merged = seeds.setdefault(int(seed), {})
                for key, value in run.items():
                    merged[key] = value if key == "dense" else value["error"]
    return seeds


GVO_KEYS = ("one-shot@0.95", "gradual@0.95", "one-shot@0.98", "gradual@0.98")


def _gvo_head(key):
    arm, sparsity = key.split("@")
    return f"{100 * float(sparsity):.0f} % {arm}"


def _gvo_row(label, seeds, emphasis):
    cells = {k: [s[k] for s in seeds.values()] for k in ("dense", *GVO_KEYS)}
    out = [label, pm(cells["dense"])]
    for k in GVO_KEYS:
        other = k.replace("gradual", "one-shot")
        better = k.startswith("gradual") and mean_std(cells[k])[0] < mean_std(cells[other])[0]
        out.append(bold(pm(cells[k]), emphasis and better))
    return out


@table("gradual-vs-oneshot", f"{GVO}*.json")
def gradual_vs_oneshot(src):
    rows = [_gvo_row(label, _gvo_merge(src, spec), True) for label, spec in GVO_MAIN.items()]
    rows.append(("*earlier schedule, over 3/4 of the budget:*", "", "", "", "", ""))
    rows += [_gvo_row(label, _gvo_merge(src, spec), False) for label, spec in GVO_EARLY.items()]
    return md(("test error", "dense", *map(_gvo_head, GVO_KEYS)), rows)


@table("gradual-vs-oneshot-seeds", f"{GVO}*.json")
def gradual_vs_oneshot_seeds(src):
    rows = []
    for label, spec in GVO_MAIN.items():
        for seed, s in sorted(_gvo_merge(src, spec).items()):
            rows.append((label, seed, f"{s['dense']:.2f}", *(f"{s[k]:.2f}" for k in GVO_KEYS)))
    return md(("model", "seed", "dense", *map(_gvo_head, GVO_KEYS)), rows)


# ---- LeNet-300-100 at 50x -------------------------------------------------------------------

L50 = "lenet300-50x/bench-lenet300-50x.json"


@table("lenet300-50x", L50, HAN)
def lenet300_50x(src):
    d = src[L50]
    pruned = [r["pruned"] for r in d["runs"]]
    goal = src[HAN]["paper"]["dense_error"]   # the issue's goal: Han et al.'s dense error
    rows = [("prunekit", pm(r["dense"] for r in d["runs"]),
             f"{bold(pm(pruned))} (per seed {', '.join(f'{e:.2f}' for e in pruned)})",
             f"≤ {goal:.2f} % ({bold('met' if mean_std(pruned)[0] <= goal else 'not met')})")]
    sparsity = d["args"]["sparsity"]
    return md(("test error", "dense teacher", f"{100 * sparsity:.0f} % sparse ({1 / (1 - sparsity):.0f}x)", "goal"),
              rows)


