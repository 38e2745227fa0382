"""Tables of docs/results/sparse-kernels.md: pk.to_sparse against dense PyTorch on this CPU."""
import statistics

from .common import RUNS, md, table

KERNELS = "sparse-kernels/sparse-kernels.json"
DECODE = "sparse-kernels/llm-decode.json"
DECODE_1T = "sparse-kernels/llm-decode-1thread.json"
DECODE_RUNS = ("sparse-kernels/llm-decode.json", "sparse-kernels/llm-decode-run*.json")
KERNEL_RUNS = ("sparse-kernels/sparse-kernels.json", "sparse-kernels/sparse-kernels-run*.json")


def _x(value) -> str:
    return f"{value:.2f}x"


def _kernels(names) -> str:
    counts = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in counts.items())


@table("sparse-mlp", KERNELS)
def sparse_mlp(src):
    rows = [(f"{100 * r['sparsity']:.0f} %", r["batch"], f"{1e3 * r['times']['dense']['median_s']:.2f} ms",
             f"**{_x(r['speedup'])}**", f"**{_x(r['speedup_alone'])}**", _x(r["speedup_torch_csr"]),
             _x(r["bound"]), _kernels(r["kernels"]), f"{r['max_abs_diff']:.1e}") for r in src[KERNELS]["mlp"]]
    return md(("sparsity", "batch", "dense", "pk.to_sparse, interleaved", "pk.to_sparse, alone",
               "torch CSR, every layer", "bytes bound", "kernels chosen", "max abs diff"), rows)


def kernel_runs(src) -> list:
    """(number, run) for every kept run of sparse_kernels.py, the newest (sparse-kernels.json) first."""
    count = len(list((RUNS / "sparse-kernels").glob("sparse-kernels-run*.json"))) + 1
    names = [KERNELS] + [f"sparse-kernels/sparse-kernels-run{i}.json" for i in range(count - 1, 0, -1)]
    return [(count - i, src[name]) for i, name in enumerate(names)]


def mlp_90(run) -> dict:
    return {r["batch"]: r for r in run["mlp"] if r["sparsity"] == 0.9}


def runs_median(values) -> str:
    values = [v for v in values if v is not None]
    return f"{_x(statistics.median(values))} ({len(values)} runs)"


@table("sparse-mlp-runs", *KERNEL_RUNS)
def sparse_mlp_runs(src):
    """The MLP at 90 % and BERT's 768x768 at one token in every kept run, the newest first."""
    rows, columns = [], []
    for number, run in kernel_runs(src):
        mlp = mlp_90(run)
        bert = next(r for r in run["bert"] if r["shape"] == [768, 768] and r["batch"] == 1)
        values = [mlp[1]["speedup"], mlp[1].get("speedup_alone"), mlp[32]["speedup"], mlp[32].get("speedup_alone"),
                  bert["speedup"]]
        columns.append(values)
        rows.append([f"run {number}"] + ["-" if v is None else _x(v) for v in values]
                    + [f"{1e3 * mlp[1]['times']['dense']['median_s']:.2f} ms"])
    rows.append(["**median**"] + [f"**{runs_median(c)}**" for c in zip(*columns)] + [""])
    return md(("run", "MLP 90 %, batch 1, taking turns", "batch 1, alone", "batch 32, taking turns",
               "batch 32, alone", "768 → 768 at 90 %, one token", "dense MLP, batch 1"), rows)


@table("sparse-crossover", KERNELS)
def sparse_crossover(src):
    cells = src[KERNELS]["crossover"]
    batches = sorted({c["batch"] for c in cells})
    rows = []
    for sparsity in sorted({c["sparsity"] for c in cells}):
        by = {c["batch"]: c for c in cells if c["sparsity"] == sparsity}
        rows.append([f"{100 * sparsity:.0f} %"] + [f"{by[b]['kernel']} {_x(by[b]['speedup'])}" for b in batches])
    return md(["sparsity"] + [f"batch {b}" for b in batches], rows)


@table("sparse-bert", KERNELS)
def sparse_bert(src):
    rows = [(f"{r['shape'][1]} → {r['shape'][0]}", r["batch"], r["kernel"], f"**{_x(r['speedup'])}**",
             f"{1e6 * r['times']['dense']['median_s']:.0f} µs") for r in src[KERNELS]["bert"]]
    return md(("layer (in → out)", "tokens", "kernel chosen", "speedup", "dense"), rows)


@table("sparse-nm", KERNELS)
def sparse_nm(src):
    rows = [(r["pattern"], r["batch"], _x(r["nm_forced"]["speedup"]), r["chosen"]["kernel"],
             _x(r["chosen"]["speedup"])) for r in src[KERNELS]["nm"]]
    return md(("pattern", "batch", "packed N:M kernel", "to_sparse's choice", "its speedup"), rows)


@table("sparse-size", KERNELS)
def sparse_size(src):
    r = src[KERNELS]["size"][0]
    b = r["bytes"]
    return md(("file at 90 %", "bytes", "of dense"),
              [("dense fp32", f"{b['dense']:,}", "1"),
               ("compressed", f"{b['compressed']:,}", f"{r['compressed_ratio']:.3f}"),
               ("compressed, int8 values", f"{b['compressed_int8']:,}", f"{r['int8_ratio']:.3f}")])


@table("llm-decode", DECODE)
def llm_decode(src):
    rows = []
    for r in src[DECODE]["rows"]:
        t, split = r["timing"], r["split"]
        rows.append((r["method"], f"{t['dense']['tokens_per_s']:.1f}", f"{t['pruned']['tokens_per_s']:.1f}",
                     f"{t['sparse']['tokens_per_s']:.1f}", f"**{_x(r['tokens_speedup'])}**",
                     f"{t['dense']['block_ms_per_token']:.1f} → {t['sparse']['block_ms_per_token']:.1f} ms",
                     f"**{_x(r['block_speedup'])}**",
                     f"{split['dense']['linear_ms']:.1f} → {split['sparse']['linear_ms']:.1f} ms",
                     f"{split['dense']['block_ms'] - split['dense']['linear_ms']:.1f} ms",
                     f"{_x(r['bytes_ratio']['chosen'])} / {_x(r['bytes_ratio']['smallest'])}",
                     _x(r["block_bound"]), ", ".join(f"{k} ×{v}" for k, v in r["kernels"].items()),
                     "yes" if r["same_tokens_as_pruned"] else "no"))
    return md(("Gemma-3 270M", "dense tok/s", "masked tok/s", "sparse kernels tok/s", "tokens/s vs dense",
               "blocks per token", "blocks vs dense", "their Linear layers", "the rest of the blocks",
               "Linear bytes ratio, chosen / smallest form", "blocks' bound", "kernels", "same greedy text"), rows)


@table("llm-decode-runs", *DECODE_RUNS)
def llm_decode_runs(src):
    """The blocks' speedup in every kept run of the same command, the newest first."""
    runs = [src[DECODE]] + [src[f"sparse-kernels/llm-decode-run{i}.json"] for i in (2, 1)]
    rows = []
    for method in ("wanda 50 %", "wanda 2:4"):
        found = [next(r for r in run["rows"] if r["method"] == method) for run in runs]
        rows.append([method] + [_x(r["block_speedup"]) for r in found] + [_x(r["block_bound"]) for r in found[:1]])
    return md(("Gemma-3 270M, blocks vs dense", "run 3", "run 2", "run 1", "blocks' bound (run 3)"), rows)


@table("llm-decode-1thread", DECODE_1T)
def llm_decode_one_thread(src):
    rows = [(r["method"], f"{r['timing']['dense']['block_ms_per_token']:.1f} → "
             f"{r['timing']['sparse']['block_ms_per_token']:.1f} ms", _x(r["block_speedup"]), _x(r["tokens_speedup"]))
            for r in src[DECODE_1T]["rows"]]
    return md(("Gemma-3 270M, our kernels on one thread", "blocks per token", "blocks vs dense", "tokens/s vs dense"),
              rows)


ONNX = "sparse-kernels/onnx-resnet50.json"
FORMS = "sparse-kernels/deploy-forms.json"


@table("onnx-resnet50", ONNX)
def onnx_resnet50(src):
    rows = src[ONNX]["rows"]
    by = {(r["batch"], r["form"]): r for r in rows if r["variant"] not in ("dense",) and r.get("speedup")}
    out = []
    for batch in sorted({b for b, _ in by}):
        eager, ort = by[(batch, "eager")]["speedup"], by[(batch, "onnxruntime")]["speedup"]
        out.append((batch, f"{by[(batch, 'eager')]['macs_ratio']:.2f}x", _x(eager), _x(ort),
                    f"**{100 * (ort / eager - 1):+.0f} %**"))
    return md(("batch", "MACs reduction", "speedup in PyTorch (eager)", "speedup in ONNX Runtime",
               "ONNX Runtime vs PyTorch"), out)


@table("deploy-forms", FORMS)
def deploy_forms(src):
    d = src[FORMS]
    times = {(r["form"], r["threads"], r["batch"]): r for r in d["bench"]}
    cells = sorted({(t, b) for _, t, b in times})
    rows = []
    for form, acc in d["accuracy"].items():
        speed = [f"{times[(form, t, b)]['speedup']:.2f}x" for t, b in cells]
        rows.append((form, f"{100 * acc:.2f} %", *speed))
    return md(("form", "test accuracy", *[f"vs dense, {t} thread{'s' if t > 1 else ''}, batch {b}" for t, b in cells]),
              rows)


@table("deploy-sizes", FORMS)
def deploy_sizes(src):
    b = src[FORMS]["bytes"]
    return md(("file", "bytes", "of dense"), [(k, f"{v:,}", f"{v / b['dense']:.3f}") for k, v in b.items()])


CONV = "sparse-kernels/sparse-kernels-conv.json"


@table("sparse-conv", CONV)
def sparse_conv(src):
    rows = [(f"{r['shape'][1]} → {r['shape'][0]}, {r['shape'][2]}x{r['shape'][3]}",
             f"{r['input'][2]}x{r['input'][3]}",
             f"{100 * r['sparsity']:.0f} %", r["kernel"],
             _x(r["choice_seconds"]["dense"] / r["choice_seconds"][r["kernel"]]), f"**{_x(r['speedup'])}**")
            for r in src[CONV]["conv"]]
    return md(("Conv2d", "input", "sparsity", "kernel chosen", "when chosen", "timed again vs F.conv2d"), rows)
