"""Tables of the structured-pruning results: slimming, coverage, timing, realized speedup, bound, agreement."""
import functools
import re

from .common import bold, md, mean_std, pm, secs, table

# ---- network slimming -----------------------------------------------------------------------

SLIM = "slimming-mlp/bench-slimming.json"


def _err(runs, row):
    return [r[row]["error"] for r in runs]


@table("slimming", SLIM)
def slimming(src):
    d = src[SLIM]
    runs, paper = d["runs"], d["paper"]
    red = f"{mean_std(r['slimmed']['reduction'] for r in runs)[0]:.1f} %"
    dense = pm(r["dense_error"] for r in runs)
    rows = [("paper", f"{paper['dense_error']:.2f} %", "", f"{paper['slimmed_error']:.2f} %",
             f"{paper['param_reduction']:.0f} %"),
            ("prunekit, bn_scale (slimming)", dense, pm(r["sparse_dense_error"] for r in runs),
             pm(_err(runs, "slimmed")), red),
            ("prunekit, `l2` per layer, no L1 penalty", dense, "", pm(_err(runs, "l2_baseline")), red)]
    return md(("test error", "dense", "dense with L1", paper["arch"], "parameters removed"), rows)


SLIM_ATTEMPTS = ("slimming-mlp/bench-slimming-distill.json", "slimming-mlp/bench-slimming-gradual-s0.json",
                 "slimming-mlp/bench-slimming-gradual-s12.json", "slimming-mlp/bench-slimming-fulltrain.json")


@table("slimming-attempts", *SLIM_ATTEMPTS)
def slimming_attempts(src):
    distill, g0, g12, full = (src[p] for p in SLIM_ATTEMPTS)
    gradual = g0["runs"] + g12["runs"]

    def row(label, runs, key, same_run=True, beside=""):
        return (label, pm(_err(runs, key)), ", ".join(f"{e:.2f}" for e in _err(runs, key)),
                pm(_err(runs, "slimmed")) if same_run else "", beside)

    full_beside = f"dense {pm(r['dense_error'] for r in full['runs'])}, `l2` {pm(_err(full['runs'], 'l2_baseline'))}"
    rows = [row("fine-tuned with the dense model's soft targets (`--distill`)", distill["runs"], "slimmed_distilled"),
            row("neurons removed gradually while fine-tuning (`SoftChannelPruner`)", gradual, "slimmed_gradual"),
            row("trained on the whole training set (`--full-train`), last epoch kept", full["runs"], "slimmed", False,
                full_beside)]
    return md(("attempt", "test error", "per seed", "plain slimming, same run", "beside it"), rows)


SWEEPS = ("slimming-mlp/bench-slimming-sweep-low-s.json", "slimming-mlp/bench-slimming-paper-recipe-sweep.json")


@table("slimming-sweeps", *SWEEPS)
def slimming_sweeps(src):
    rows = []
    for path, label in zip(SWEEPS, ("our recipe", "the paper's recipe (`--paper-recipe`)")):
        for key, r in src[path]["sweep"].items():
            s, lr = (part.split("=")[1] for part in key.split(","))
            rows.append((label, s, lr, f"{r['dense_val']:.2f} %", f"{r['val_error']:.2f} %"))
    return md(("recipe", "s", "fine-tuning lr", "dense (validation error)", "slimmed, fine-tuned (validation error)"),
              rows)


# ---- structured coverage --------------------------------------------------------------------

COV = {"bench-structured-coverage-rest.json": "the large and late-alphabet classification models",
       "bench-structured-coverage-detseg.json": "detection and segmentation",
       "bench-structured-coverage-r03-rest.json": "ratio 0.3, the last 23 models",
       "bench-structured-coverage-recheck.json": "re-check after the stricter op rules, prunekit only"}
COV_PATHS = tuple(f"structured-coverage/{name}" for name in COV)
TOOLS = {"prunekit": "prunekit", "torch_pruning": "Torch-Pruning"}


def _ok(records, tool):
    mine = [r for r in records if r["tool"] == tool]
    return f"{sum(r['status'] == 'ok' for r in mine)}/{len(mine)}" if mine else "not run"


@table("coverage", *COV_PATHS)
def coverage(src):
    rows = []
    for path, label in zip(COV_PATHS, COV.values()):
        d = src[path]
        tasks = {}
        for r in d["records"]:
            if r["tool"] == d["tools"][0]:
                tasks[r["task"]] = tasks.get(r["task"], 0) + 1
        models = ", ".join(f"{n} {task}" for task, n in tasks.items())
        for ratio in d["ratios"]:
            recs = [r for r in d["records"] if r["ratio"] == ratio]
            rows.append((f"[{label}](runs/{path})", models, ratio, _ok(recs, "prunekit"), _ok(recs, "torch_pruning")))
    return md(("run (JSON)", "models", "ratio", "prunekit", "Torch-Pruning 1.6.1"), rows)


@table("coverage-failures", *COV_PATHS)
def coverage_failures(src):
    rows = [(r["model"], r["ratio"], TOOLS[r["tool"]], r["status"], r["error"] or "")
            for path in COV_PATHS for r in src[path]["records"] if r["status"] != "ok"]
    return md(("model", "ratio", "tool", "status", "error"), rows)


def coverage_totals(src, ratio=0.5):
    """(prunekit ok, Torch-Pruning ok, models) over the JSON runs where both tools ran at `ratio`."""
    pk = tp = n = 0
    for path in COV_PATHS:
        d = src[path]
        if "torch_pruning" in d["tools"] and ratio in d["ratios"]:
            recs = [r for r in d["records"] if r["ratio"] == ratio]
            pk += sum(r["status"] == "ok" for r in recs if r["tool"] == "prunekit")
            tp += sum(r["status"] == "ok" for r in recs if r["tool"] == "torch_pruning")
            n += sum(r["tool"] == "prunekit" for r in recs)
    return pk, tp, n


@table("coverage-detseg", COV_PATHS[1])
def coverage_detseg(src):
    by = {}
    for r in src[COV_PATHS[1]]["records"]:
        by.setdefault((r["task"], r["model"]), {})[r["tool"]] = r

    def cell(r):
        if r["status"] != "ok":
            return r["status"]
        return f"{r['params_after'] / r['params_before']:.2f} / {r['macs_after'] / r['macs_before']:.2f}"

    rows = [(model, task, cell(t["prunekit"]), cell(t["torch_pruning"])) for (task, model), t in by.items()]
    return md(("model", "task", "prunekit: params / MACs left", "Torch-Pruning: params / MACs left"), rows)


# ---- structured coverage, timm ---------------------------------------------------------------

COV_TIMM = "structured-coverage-timm/structured-coverage-timm.json"
STATUSES = ("ok", "error", "no reduction", "timeout", "skipped")


def _counts(records, tool):
    mine = [r for r in records if r["tool"] == tool]
    ran = [r for r in mine if r["status"] != "skipped"]
    detail = ", ".join(f"{s} {n}" for s in STATUSES[1:] if (n := sum(r["status"] == s for r in mine)))
    return f"{sum(r['status'] == 'ok' for r in ran)}/{len(ran)}" + (f" ({detail})" if detail else "")


@table("coverage-timm", COV_TIMM)
def coverage_timm(src):
    d = src[COV_TIMM]
    models = len({r["model"] for r in d["records"]})
    models = f"{models} of {d['models_total']} (run not complete)" if d.get("partial") else models
    rows = [(ratio, models, *(_counts([r for r in d["records"] if r["ratio"] == ratio], tool) for tool in TOOLS))
            for ratio in d["ratios"]]
    return md(("ratio", "models", "prunekit: pruned correctly", "Torch-Pruning 1.6.1: pruned correctly"), rows)


def failure_class(error: str) -> str:
    """An error with its numbers, shapes and names blanked: the same failure on many models reads alike."""
    error = re.sub(r"'[^']*'", "'…'", error or "")
    return re.sub(r"\d+(\.\d+)?", "N", error)[:110]


@table("coverage-timm-failures", COV_TIMM)
def coverage_timm_failures(src):
    groups = {}
    for r in src[COV_TIMM]["records"]:
        if r["status"] not in ("ok", "skipped"):
            key = (TOOLS[r["tool"]], r["status"], failure_class(r["error"]))
            groups.setdefault(key, set()).add(r["model"].removeprefix("timm/"))
    rows = [(tool, status, f"`{cls}`" if cls else "", len(models), ", ".join(sorted(models)[:6]) +
             (", …" if len(models) > 6 else ""))
            for (tool, status, cls), models in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1])))]
    return md(("tool", "status", "failure class", "models", "which"), rows)


def _totals(records, ratio):
    """(prunekit ok, Torch-Pruning ok, models run) at `ratio`; skipped models do not count."""
    recs = [r for r in records if r["ratio"] == ratio and r["status"] != "skipped"]
    ok = {tool: sum(r["status"] == "ok" for r in recs if r["tool"] == tool) for tool in TOOLS}
    return ok["prunekit"], ok["torch_pruning"], sum(r["tool"] == "prunekit" for r in recs)


def coverage_timm_totals(src, ratio=0.5):
    return _totals(src[COV_TIMM]["records"], ratio)


# ---- structured coverage, YOLO ---------------------------------------------------------------

COV_YOLO = "structured-coverage-yolo/structured-coverage-yolo.json"


@table("coverage-yolo", COV_YOLO)
def coverage_yolo(src):
    """Each YOLO config: both tools' params / MACs left (or their status) at each ratio."""
    d = src[COV_YOLO]
    by = {}
    for r in d["records"]:
        by.setdefault(r["model"].removeprefix("ultralytics:"), {})[(r["tool"], r["ratio"])] = r

    def cell(r):
        if r is None:
            return "not run"
        if r["status"] != "ok":
            return f"{r['status']}: `{failure_class(r['error'])[:60]}`" if r["error"] else r["status"]
        return f"{r['params_after'] / r['params_before']:.2f} / {r['macs_after'] / r['macs_before']:.2f}"

    header = ["config"] + [f"{TOOLS[t]} at {ratio}: params / MACs left" for ratio in d["ratios"] for t in TOOLS]
    rows = [[name] + [cell(cells.get((t, ratio))) for ratio in d["ratios"] for t in TOOLS]
            for name, cells in by.items()]
    rows.append(["**pruned correctly**"] + [f"**{_ok([r for r in d['records'] if r['ratio'] == ratio], t)}**"
                                            for ratio in d["ratios"] for t in TOOLS])
    return md(header, rows)


def coverage_yolo_totals(src, ratio=0.5):
    return _totals(src[COV_YOLO]["records"], ratio)


# ---- structured timing ----------------------------------------------------------------------

TIMING = ("structured-timing/bench-structured-timing-bf16.json", "structured-timing/bench-structured-timing-fp32.json")
TIMING_NAMES = {"resnet50": "ResNet-50", "resnet152": "ResNet-152", "vit_b_16": "ViT-B/16",
                "llama_1b": "Llama-style 1.1B (GQA)"}


def _timing(r):
    pk, tp = (r["tools"][t]["prune_median_s"] for t in ("prunekit", "torch_pruning"))
    ratio = r["prune_ratio_pk_over_tp"]
    return secs(pk), secs(tp), bold(f"{ratio:.2f}", ratio <= 0.5)


@table("structured-timing", *TIMING)
def structured_timing(src):
    bf16, fp32 = (src[p] for p in TIMING)
    fp = {r["model"]: r for r in fp32["results"]}
    rows = [(TIMING_NAMES[r["model"]], *_timing(r), *_timing(fp[r["model"]])) for r in bf16["results"]]
    return md(("model", f"{bf16['dtype']}: prunekit", "Torch-Pruning", "ratio", f"{fp32['dtype']}: prunekit",
               "Torch-Pruning", "ratio (goal ≤ 0.5)"), rows)


# ---- realized speedup -----------------------------------------------------------------------

RS = "realized-speedup/bench-realized-speedup"
RS_NAMES = {"resnet50": "ResNet-50", "tf_efficientnet_lite0": "EfficientNet-Lite0"}


def _rows(d, **match):
    return [r for r in d["rows"] if all(r[k] == v for k, v in match.items())]


def _one(d, **match):
    (row,) = _rows(d, **match)
    return row


def _eff(r, goal=0.85):
    return bold(f"{r['efficiency']:.2f}", r["efficiency"] >= goal)


@table("realized-speedup", f"{RS}.json", f"{RS}-1thread.json")
def realized_speedup(src):
    two, one = src[f"{RS}.json"], src[f"{RS}-1thread.json"]
    rows = []
    for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in two["rows"]):
        cells = []
        for d in (two, one):
            for form in d["forms"]:
                get = functools.partial(_one, d, model=model, batch=batch, form=form)
                cells.append(f"{_eff(get(variant='prunekit r1'))} ({_eff(get(variant='prunekit r8'))}) / "
                             f"{get(variant='TP r1')['efficiency']:.2f}")
        macs = _one(two, model=model, batch=batch, form="eager", variant="prunekit r1")["macs_ratio"]
        rows.append((RS_NAMES[model], batch, f"{macs:.2f}x", *cells))
    heads = [f"{d['threads']} thread{'s' * (d['threads'] > 1)}, {form}" for d in (two, one) for form in d["forms"]]
    return md(("model", "batch", "MACs reduction", *heads), rows)


RS_YOLO = (f"{RS}-yolo.json", f"{RS}-yolo-run1.json")


@table("realized-speedup-yolo", *RS_YOLO)
def realized_speedup_yolo(src):
    """prunekit at ratio 0.5 (round_to 8) on YOLO, eager: the speedup in each run, the efficiency in the last."""
    last, first = (src[p] for p in RS_YOLO)
    rows = []
    for r in last["rows"]:
        if r["variant"] == "dense":
            continue
        before = _one(first, model=r["model"], batch=r["batch"], form=r["form"], variant=r["variant"])
        rows.append((r["model"].removeprefix("ultralytics:"), r["batch"], f"{r['macs_ratio']:.2f}x",
                     f"{r['speedup']:.2f}x ({before['speedup']:.2f}x)", _eff(r)))
    return md(("model", "batch", "MACs reduction", "measured speedup (the run before)", "efficiency"), rows)


@table("realized-speedup-ort", f"{RS}-ort.json", f"{RS}-ort-effnet-b1.json")
def realized_speedup_ort(src):
    ort, rerun = src[f"{RS}-ort.json"], src[f"{RS}-ort-effnet-b1.json"]
    rows = []
    for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in ort["rows"]):
        d = rerun if _rows(rerun, model=model, batch=batch) else ort
        dense, r1 = (_one(d, model=model, batch=batch, variant=v)["latency"]["median_s"] * 1000
                     for v in ("dense", "prunekit r1"))
        fmt = ".0f" if dense >= 100 else ".1f"
        effs = [_eff(_one(d, model=model, batch=batch, variant=f"prunekit r{k}")) for k in (1, 8, 16)]
        note = f" ({d['repeats']}-repeat rerun)" if d is rerun else ""
        rows.append((RS_NAMES[model], f"{batch}{note}", f"{dense:{fmt}} → {r1:{fmt}}", *effs))
    return md(("model", "batch", "ms dense → pruned (round_to 1)", "round_to 1", "round_to 8", "round_to 16"), rows)


def _ms_eff(r):
    ms = r["latency"]["median_s"] * 1000
    return f"{ms:.1f}" if "efficiency" not in r else f"{ms:.1f} ({r['efficiency']:.2f})"


@table("realized-speedup-rerun", f"{RS}-ort-effnet-b1.json")
def realized_speedup_rerun(src):
    d = src[f"{RS}-ort-effnet-b1.json"]
    rows = [(r["variant"], f"{r['macs_ratio']:.2f}x" if "macs_ratio" in r else "", _ms_eff(r)) for r in d["rows"]]
    return md(("EfficientNet-Lite0, batch 1, ONNX Runtime", "MACs reduction", "ms (efficiency)"), rows)


WIDE = {"dense": "dense", "prunekit": "every space halved", "pk wide": "wide layers only"}


@table("realized-speedup-wide", f"{RS}-wide-b1.json")
def realized_speedup_wide(src):
    d = src[f"{RS}-wide-b1.json"]
    groups = {}
    for r in d["rows"]:
        kind = r["variant"].rsplit(" ", 1)[0] if r["variant"] != "dense" else "dense"
        groups.setdefault(kind, {}).setdefault(r["variant"], {})[r["form"]] = r
    rows = []
    for kind, variants in groups.items():
        for variant, forms in variants.items():
            label = WIDE[kind] + ("" if kind == "dense" else f", round_to {variant.rsplit(' r', 1)[1]}")
            macs = "" if kind == "dense" else f"{forms[d['forms'][0]]['macs_ratio']:.2f}x"
            rows.append((label, macs, *(_ms_eff(forms[f]) for f in d["forms"])))
    forms = {"onnxruntime": "ONNX Runtime", "frozen": "frozen PyTorch", "openvino": "OpenVINO"}
    return md(("EfficientNet-Lite0, batch 1, one thread", "MACs reduction",
               *(f"{forms[f]}: ms (efficiency)" for f in d["forms"])), rows)


@table("realized-speedup-openvino", f"{RS}-openvino-b1.json")
def realized_speedup_openvino(src):
    d = src[f"{RS}-openvino-b1.json"]
    rounds = [v for v in dict.fromkeys(r["variant"] for r in d["rows"]) if v != "dense"]
    names = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
    rows = [(names[f], *(_ms_eff(_one(d, form=f, variant=v)) for v in ("dense", *rounds))) for f in d["forms"]]
    return md(("EfficientNet-Lite0, batch 1, one thread", "dense ms",
               *(f"round_to {v.rsplit(' r', 1)[1]}: ms (efficiency)" for v in rounds)), rows)


# ---- speedup bound --------------------------------------------------------------------------

BOUND = "speedup-bound/bench-speedup-bound.json"


@table("speedup-bound", BOUND)
def speedup_bound(src):
    rows = [(RS_NAMES[r["model"]], r["batch"], f"{r['dense_ms']:.1f}", f"{100 * r['dense_conv_share']:.0f} %",
             f"{r['macs_ratio']:.2f}x", f"{r['efficiency_bound']:.2f}", f"{r['efficiency_bound_fused']:.2f}")
            for r in src[BOUND]["rows"]]
    return md(("model", "batch", "dense ms", "time in dense convs", "MACs reduction",
               "efficiency if kernels kept their efficiency", "the same, BatchNorm and activations free"), rows)


# ---- pretrained agreement -------------------------------------------------------------------

AGREE = "pretrained-agreement/bench-pretrained-agreement.json"


@table("pretrained-agreement", AGREE)
def pretrained_agreement(src):
    d = src[AGREE]
    rows = [(f"`{r['importance']}`", f"{r['params_before'] / 1e6:.2f}M → {r['params_after'] / 1e6:.2f}M",
             f"{100 * r['top1_agreement']:.0f} %", f"{100 * r['top5_contains_top1']:.0f} %") for r in d["rows"]]
    return md(("importance", "parameters", f"top-1 agreement ({d['views']} views)", "dense top-1 in pruned top-5"),
              rows)


