"""Tables of the search results: automatic search vs uniform, search to a latency target."""
import json

from .common import bold, md, mean_std, pm, runs_of, signed, table

# ---- search vs uniform ----------------------------------------------------------------------

SVU = "search-vs-uniform/bench-search-vs-uniform"


def _seeds(prefix, n):
    return [f"{prefix}-s{i}" for i in range(n)]


# (label, files (suffixes of SVU), kind, flags read from the JSON args, per-seed differences shown)
SVU_ROWS = (
    ("LeNet-5, channels", ["-channels-recover"], "after", ("epochs", "finetune", "recover"), False),
    ("LeNet-5, channels", ["-channels"], "after", ("epochs", "finetune"), False),
    ("same run, before fine-tuning", ["-channels"], "before", (), False),
    ("LeNet-5, weights masked", [""], "after", ("epochs", "finetune"), False),
    ("LeNet-5, channels, a deeper cut", ["-channels-75"], "after", ("epochs", "finetune", "target"), False),
    ("small VGG-style CNN with BatchNorm", ["-smallcnn"], "after", ("model", "epochs", "finetune"), True),
    ("same run, before fine-tuning", ["-smallcnn"], "before", (), False),
    ("PyTorch's MNIST-example CNN", ["-mnistcnn-s0", "-mnistcnn-s12"], "after", ("model", "epochs", "finetune"), False),
    ("ResNet-8", _seeds("-resnet8", 3), "after", ("model", "epochs", "finetune"), False),
    ("same run, before fine-tuning", _seeds("-resnet8", 3), "before", (), False),
    ("ResNet-8, adaptive-BN scoring, {n} seeds", _seeds("-resnet8-adaptive-bn", 2), "list",
     ("epochs", "finetune", "adaptive_bn"), False),
    ("three-stage VGG, joint search, adaptive-BN scoring", _seeds("-vgg3-joint", 3), "after",
     ("model", "widths", "epochs", "finetune", "joint", "adaptive_bn"), True),
    ("same net and seeds, curves search, adaptive-BN scoring", _seeds("-vgg3-random", 3), "after",
     ("adaptive_bn", "random"), True),
    ("same run, {k} random allocations per seed at the same MACs (control)", _seeds("-vgg3-random", 3), "random",
     (), False),
    ("half-width three-stage VGG, joint search, adaptive-BN scoring, **{n} seeds**", _seeds("-vgg3-narrow", 6),
     "after", ("widths", "epochs", "finetune", "joint", "adaptive_bn", "random"), True),
    ("same run, seeds 0-2 only", _seeds("-vgg3-narrow", 3), "after", (), False),
    ("same run, {k} random allocations per seed (control)", _seeds("-vgg3-narrow", 6), "random", (), False),
    ("same net and seeds, joint search scoring each candidate after a short fine-tuning, {n} seeds",
     _seeds("-vgg3-narrow-recover", 6), "after", ("joint", "recover"), True),
)


def _flags(datas, keys):
    out = []
    for key in keys:
        values = {json.dumps(d["args"][key]) for d in datas}
        if len(values) > 1:
            raise ValueError(f"--{key} differs between the files of one row: {values}")
        value = datas[0]["args"][key]
        flag = "--" + key.replace("_", "-")
        out.append(flag if value is True else f"{flag} {','.join(map(str, value))}" if isinstance(value, list)
                   else f"{flag} {value}")
    return f" (`{' '.join(out)}`)" if out else ""


def _wins(runs, diffs):
    d = [r["search"] - r["uniform"] for r in runs]
    text = f"{sum(x > 0 for x in d)} of {len(d)}"
    return text + (f" ({', '.join(signed(x) for x in d)})" if diffs else "")


def svu_row(src, label, files, kind, flags, diffs):
    datas = [src[f"{SVU}{f}.json"] for f in files]
    runs = runs_of(datas)
    label = label.format(n=len(runs), k=datas[0]["args"].get("random", 0)) + _flags(datas, flags)
    if kind == "after":
        return (label, pm(r["dense"] for r in runs), pm(r["uniform"] for r in runs), pm(r["search"] for r in runs),
                _wins(runs, diffs))
    if kind == "before":
        wins = sum(r["search_before_finetune"] > r["uniform_before_finetune"] for r in runs)
        return (label, "", pm(r["uniform_before_finetune"] for r in runs),
                pm(r["search_before_finetune"] for r in runs), f"{wins} of {len(runs)}")
    if kind == "list":
        return (label, *(", ".join(f"{r[k]:.2f}" for r in runs) + " %" for k in ("dense", "uniform", "search")),
                _wins(runs, diffs))
    values = [x for r in runs for x in r["random"]]
    return (label, "", "", f"random: {pm(values)} ({min(values):.2f}-{max(values):.2f})", "")


@table("search-vs-uniform", f"{SVU}*.json")
def search_vs_uniform(src):
    rows = [svu_row(src, *spec) for spec in SVU_ROWS]
    return md(("test accuracy", "dense", "uniform", "searched", "search wins"), rows)


# ---- search to a latency target -------------------------------------------------------------

LAT = ("search-latency/bench-search-latency.json", "search-latency/bench-search-latency-fmnist.json")
DATASETS = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


@table("search-latency", *LAT)
def search_latency(src):
    rows = []
    for path in LAT:
        d = src[path]
        runs = d["runs"]
        dataset = d["args"].get("dataset", "mnist")
        diffs = [r["search"] - r["uniform"] for r in runs]
        every = all(x > 0 for x in diffs)
        speed = {arm: mean_std(r[f"{arm}_speedup"] for r in runs)[0] for arm in ("uniform", "search")}
        rows.append((DATASETS[dataset], pm(r["dense"] for r in runs),
                     f"{pm(r['uniform'] for r in runs)}, {speed['uniform']:.2f}x",
                     f"{bold(pm(r['search'] for r in runs), every)}, {speed['search']:.2f}x",
                     f"{sum(x > 0 for x in diffs)} of {len(runs)} ({', '.join(signed(x) for x in diffs)})"))
    return md(("dataset", "dense", "uniform: accuracy, speedup", "searched: accuracy, speedup", "search wins"), rows)




@table("search-vs-uniform-macs", f"{SVU}*.json")
def search_vs_uniform_macs(src):
    """The share of the dense MACs each arm kept: the search meets the target, uniform's one ratio stops short."""
    rows = []
    for label, files, kind, flags, _ in SVU_ROWS:
        if kind != "after" or not flags:
            continue
        datas = [src[f"{SVU}{f}.json"] for f in files]
        runs = runs_of(datas)
        uniform, search = ([r[f"{arm}_macs_kept"] for r in runs] for arm in ("uniform", "search"))
        rows.append((label.format(n=len(runs)) + _flags(datas, flags), datas[0]["args"]["target"],
                     _span(uniform), _span(search)))
    return md(("run", "MACs removed (target)", "uniform keeps", "search keeps"), rows)


def _span(values):
    lo, hi = f"{min(values):.3f}", f"{max(values):.3f}"
    return lo if lo == hi else f"{lo}-{hi}"
