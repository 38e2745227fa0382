"""The README's table of headline claims: one figure per results page, with what it is held against.

One small function per row: (claim, prunekit's figure, the anchor it is held against, page).
"""
import functools
import statistics

from .common import MIB, md, mean_std, pm, runs_of, secs, table
from .deploy import KERNEL_RUNS, kernel_runs, mlp_90
from .deploy import KERNELS as SPARSE_KERNELS
from .llm import RANKS as LLM_RANKS
from .llm import STREAM as LLM_STREAM
from .magnitude import DEMO, GT, GVO, GVO_MAIN, HAN, L50, LOT1D, _gvo_merge, gt_at
from .search import LAT, SVU, _seeds
from .structured import (BOUND, COV_PATHS, COV_TIMM, COV_YOLO, RS, SLIM, TIMING, _err, _one, coverage_timm_totals,
                         coverage_totals, coverage_yolo_totals)


def _page(name):
    return f"[{name}](docs/results/{name}.md)"


def _verdict(met):
    return "met" if met else "not met"


def global_threshold(src):
    pk, tu, faster, memory = gt_at(src)
    return ("global magnitude threshold over 100M weights: time, extra memory",
            f"{secs(pk['seconds'])}, {pk['extra_peak_bytes'] / MIB:.0f} MiB",
            f"`torch.nn.utils.prune.global_unstructured`: {secs(tu['seconds'])}, "
            f"{tu['extra_peak_bytes'] / MIB:.0f} MiB (prunekit {faster:.1f}x faster, with {100 * memory:.0f} % "
            "of its extra memory)", _page("global-threshold"))


def han2015(src):
    paper = src[HAN]["paper"]
    errors = [r[f"global@{paper['compression']}x"] for r in src[HAN]["runs"]]
    return (f"LeNet-300-100 on MNIST at {paper['compression']}x, test error", pm(errors),
            f"Han et al. 2015: {paper['pruned_error']:.2f} %", _page("han2015-lenet300"))


def lenet300_50x(src):
    errors, sparsity = [r["pruned"] for r in src[L50]["runs"]], src[L50]["args"]["sparsity"]
    return (f"LeNet-300-100 at {100 * sparsity:.0f} % sparsity ({1 / (1 - sparsity):.0f}x), test error", pm(errors),
            f"goal ≤ {src[HAN]['paper']['dense_error']:.2f} % (Han et al.'s dense error)", _page("lenet300-50x"))


def gradual(src):
    seeds = _gvo_merge(src, GVO_MAIN["LeNet-300-100"]).values()
    return ("gradual vs one-shot, LeNet-300-100 at 98 % sparsity, test error", pm(s["gradual@0.98"] for s in seeds),
            f"one-shot, same budget: {pm(s['one-shot@0.98'] for s in seeds)}", _page("gradual-vs-oneshot"))


def lottery(src):
    last = [seed[-1] for seed in src[LOT1D]["mnist1d"]["runs"]]
    paper = src[LOT1D]["paper"]["mnist1d"]
    return (f"lottery ticket, MNIST-1D, {last[0]['weights_left']:.1f} % of weights left",
            f"{pm((r['test'] for r in last), nd=1)} (random mask {pm((r['random-mask']['test'] for r in last), nd=1)})",
            f"Greydanus & Kobak: {'-'.join(f'{x:.0f}' for x in paper['ticket_91'])} % "
            f"(random ≈ {paper['random_91']:.0f} %)", _page("lottery-tickets"))


def slimming(src):
    paper, errors = src[SLIM]["paper"], _err(src[SLIM]["runs"], "slimmed")
    return (f"network slimming, MLP {paper['arch']}, test error",
            f"{pm(errors)} ({_verdict(mean_std(errors)[0] <= paper['slimmed_error'])})",
            f"Liu et al. 2017: {paper['slimmed_error']:.2f} %", _page("slimming-mlp"))


def coverage(src):
    pk, tp, n = coverage_totals(src)
    return ("structured pruning runs correctly, torchvision models at ratio 0.5 (runs with JSON)",
            f"{pk}/{n}", f"Torch-Pruning 1.6.1: {tp}/{n}", _page("structured-coverage"))


def coverage_timm(src):
    pk, tp, n = coverage_timm_totals(src)
    return ("structured pruning runs correctly, timm: one model of every module, ratio 0.5",
            f"{pk}/{n}", f"Torch-Pruning 1.6.1: {tp}/{n}", _page("structured-coverage"))


def coverage_yolo(src):
    pk, tp, n = coverage_yolo_totals(src)
    return ("structured pruning runs correctly, Ultralytics YOLO: v5u, v8, v10, 11 (detect, seg, pose, obb, cls), "
            "ratio 0.5", f"{pk}/{n}",
            f"Torch-Pruning 1.6.1 on the same stock models, head ignored: {tp}/{n} (its YOLOv8 example first rewrites C2f)",
            _page("structured-coverage"))


def timing(src):
    by = {r["model"]: r["tools"] for r in src[TIMING[0]]["results"]}
    pk, tp = ([secs(by[m][tool]["prune_median_s"]) for m in ("resnet50", "llama_1b")]
              for tool in ("prunekit", "torch_pruning"))
    return ("structured pruning time, ResNet-50 / Llama-style 1.1B, bf16", " / ".join(pk),
            f"Torch-Pruning 1.6.1: {' / '.join(tp)}", _page("structured-timing"))


def realized_resnet(src):
    d = src[f"{RS}-1thread.json"]
    get = functools.partial(_one, d, model="resnet50", batch=1, form="frozen")
    return (f"latency gain ÷ MACs reduction at {100 * d['ratio']:.0f} % channels, ResNet-50, batch 1, one thread, "
            "frozen", f"{get(variant='prunekit r1')['efficiency']:.2f}",
            f"goal ≥ {d['goal']}; Torch-Pruning {get(variant='TP r1')['efficiency']:.2f}", _page("realized-speedup"))


def realized_effnet(src):
    rerun = src[f"{RS}-ort-effnet-b1.json"]
    best = max(_one(rerun, variant=f"prunekit r{k}")["efficiency"] for k in (1, 8, 16))
    bound = _one(src[BOUND], model="tf_efficientnet_lite0", batch=1)["efficiency_bound"]
    return ("the same, EfficientNet-Lite0, batch 1, best in ONNX Runtime",
            f"{best:.2f} ({_verdict(best >= rerun['goal'])})",
            f"goal ≥ {rerun['goal']}; per-layer bound {bound:.2f}", _page("realized-speedup"))


def search_latency(src):
    runs = src[LAT[0]]["runs"]

    def arm(name):
        return f"{pm(r[name] for r in runs)} at {mean_std(r[f'{name}_speedup'] for r in runs)[0]:.2f}x"

    return ("channel search to half the latency, LeNet-5 on MNIST, test accuracy", arm("search"),
            f"uniform: {arm('uniform')}", _page("search-latency"))


def search_macs(src):
    runs = runs_of([src[f"{SVU}{f}.json"] for f in _seeds("-vgg3-narrow", 6)])
    return (f"channel search to half the MACs, half-width VGG, {len(runs)} seeds, test accuracy",
            f"{pm(r['search'] for r in runs)} (a tie)", f"uniform: {pm(r['uniform'] for r in runs)}",
            _page("search-vs-uniform"))


def demo(src):
    d = src[DEMO]
    by = {(r["method"], r["target_sparsity"]): r for r in d["runs"]}
    st, mg = by[("structured", 0.95)], by[("magnitude-global", 0.95)]
    return (f"`make demo`: LeNet-5 at {st['compression_ratio']:.0f}x, channels removed: measured speedup, "
            "test accuracy", f"{st['speedup']:.2f}x, {100 * st['accuracy']:.2f} %",
            f"magnitude at {mg['compression_ratio']:.0f}x: {mg['speedup']:.2f}x, {100 * mg['accuracy']:.2f} %; "
            f"dense {100 * d['baseline']['accuracy']:.2f} %", _page("demo"))


def llm_stream(src):
    d, gib = src[LLM_STREAM], 2 ** 30
    peak = {r["path"]: r["peak_rss"] / gib for r in d["rows"]}
    return (f"pruning past memory: Wanda 50 % on a Llama-style model of {d['weights_bytes'] / gib:.1f} GiB (fp32), "
            "peak RSS", f"{peak['prune_sharded']:.2f} GiB streamed",
            f"cap {d['cap_bytes'] / gib:.1f} GiB; whole model in memory {peak['prune']:.2f} GiB", _page("llm"))


def llm_8b(src):
    d, gib = src["llm/llm-8b-wanda.json"], 2 ** 30
    row = d["rows"][0]
    return ("Wanda 50 % on a Llama-3-8B-shaped bf16 model (15 GiB), streamed on 2 cores: peak RSS, time",
            f"{row['peak_rss'] / gib:.2f} GiB, {row['seconds'] / 60:.0f} min"
            + (" (machine shared: an upper bound)" if d.get("note") else ""),
            "goals 6 GiB and 45 min; output bf16, read back by `from_pretrained`", _page("llm"))


def llm_ranks(src):
    d = src[LLM_RANKS]
    same = all(r["same_masks_as_last_one_rank_run"] for r in d["rows"])
    return ("Wanda 50 % on Gemma-3 270M under torchrun: 2 ranks × 1 thread over 1 rank × 1 thread",
            f"{d['speedup_2_over_1']:.2f}x, {'the same' if same else 'different'} masks",
            "goal 1.6x, masks identical", _page("llm"))


def sparse_mlp(src):
    runs = [mlp_90(run)[1] for _, run in kernel_runs(src)]
    turns = [r["speedup"] for r in runs]
    alone = [r["speedup_alone"] for r in runs if "speedup_alone" in r]
    rows = mlp_90(src[SPARSE_KERNELS])
    nm = next(r for r in src[SPARSE_KERNELS]["nm"] if r["batch"] == 1)
    return ("magnitude 90 %, MLP 4096x3, on `pk.to_sparse` kernels vs dense PyTorch, batch 1 / 32; "
            "2:4 on one 4096x4096 layer, batch 1",
            f"alone {rows[1]['speedup_alone']:.2f}x / {rows[32]['speedup_alone']:.2f}x, taking turns with dense "
            f"{rows[1]['speedup']:.2f}x / {rows[32]['speedup']:.2f}x (batch 1, median of the kept runs: alone "
            f"{statistics.median(alone):.2f}x in {len(alone)}, taking turns {statistics.median(turns):.2f}x in "
            f"{len(turns)}); 2:4 {nm['chosen']['speedup']:.2f}x ({nm['chosen']['kernel']})",
            f"torch CSR on every layer: {rows[1]['speedup_torch_csr']:.2f}x / {rows[32]['speedup_torch_csr']:.2f}x; "
            f"goals 6x / 5x, 2:4 1.3x", _page("sparse-kernels"))


ROWS = (global_threshold, han2015, lenet300_50x, gradual, lottery, slimming, coverage, coverage_timm, coverage_yolo,
        timing, realized_resnet, realized_effnet, search_latency, search_macs, llm_stream, llm_8b, llm_ranks, sparse_mlp,
        demo)


@table("claims", GT, HAN, SLIM, LOT1D, L50, f"{GVO}*.json", *COV_PATHS, COV_TIMM, COV_YOLO, TIMING[0],
       f"{RS}-1thread.json", f"{RS}-ort-effnet-b1.json", BOUND, LAT[0], f"{SVU}*.json", LLM_STREAM, "llm/llm-8b-wanda.json", LLM_RANKS, *KERNEL_RUNS, DEMO)
def claims(src):
    return md(("claim", "prunekit", "held against", "page"), [row(src) for row in ROWS])
