"""Automatic per-layer search vs uniform pruning at a 50 % MACs target (issue 4).

--model lenet5 (Caffe variant: conv 20, conv 50, fc 500, fc 10; three channel spaces),
smallcnn (convs 16, 16, 32, 32 with BatchNorm, fc 128; five spaces), mnistcnn (PyTorch's
MNIST example: conv 32, conv 64, fc 128, dropout; three spaces) or resnet8 (He et al.'s CIFAR
ResNet, one basic block per stage: 16, 32, 64 channels; six spaces) on Fashion-MNIST. The dense net is
trained (--epochs, SGD lr 0.05 cosine, batch 128), then pruned two ways to the same MACs,
and each is fine-tuned the same (--finetune epochs, lr 0.01). Test accuracy, mean +- std
over seeds; every decision reads only the validation split.

--kind channels (default): channels physically removed, so the MACs really halve.
  - uniform: one ratio for every channel space, bisected until the MACs are half the dense
    model's (channel_search.uniform_ratio);
  - search: channel_search.search_channels, cost "macs": one space cut at a time to build
    the validation curves, then the greedy that loses the least accuracy per MAC saved,
    measured and bisected to the target.
--kind weights: magnitude masks; "MACs" are theoretical (MACs x weight density).
  - uniform: every layer at 50 % sparsity; search: search.search with each layer's MACs as
    its size.

--joint: the search scores each step on top of the cuts already made (NetAdapt's greedy,
channel_search.search_channels(joint=True)) instead of from the one-space curves.
--widths: smallcnn or resnet8 channels per stage (smallcnn --widths 16,32,64 is a three-stage
VGG: convs 16, 16, 32, 32, 64, 64, fc 128; seven channel spaces; --widths 8,16,32 its
half-width version, where the 50 % cut costs about a point after fine-tuning).
--recover N: the search scores each candidate after a short fine-tuning of a copy on N
training samples (NetAdapt's short-term fine-tuning) instead of right after the cut.
--adaptive-bn N: ... after re-estimating the copy's BatchNorm statistics on N training samples
(EagleEye's adaptive BN; prunekit.train.recalibrate_batchnorm), for nets with BatchNorm.

    python benchmarks/search_vs_uniform.py [--model lenet5] [--kind channels] [--seeds 0,1,2] [--epochs 8]
        [--finetune 3] [--target 0.5] [--recover 0] [--adaptive-bn 0] [--joint] [--widths 16,32,64] [--json f]
    python benchmarks/search_vs_uniform.py --merge s0.json s1.json s2.json   # report over per-seed runs
"""
import argparse
import copy
import json
import time
from pathlib import Path

import torch

import prunekit as pk
from _stats import mean_std, summarize
from prunekit import data, zoo
from prunekit.measure.macs import layer_stats, totals
from prunekit.search import channels as channel_search
from prunekit.search import layerwise as search
from prunekit.train import FitConfig, evaluate, fit, recalibrate_batchnorm


def macs_kept(model, x):
    stats = totals(layer_stats(model, (x,)))
    return stats["effective_macs"] / stats["macs"]


def prune_weights(dense, x, on_val, target, joint=False):
    """(uniform, searched, details) with magnitude masks at `target` of the theoretical MACs."""
    layer_macs = {s["name"]: s["macs"] for s in layer_stats(dense, (x,))}
    uniform = copy.deepcopy(dense)
    pk.prune_magnitude(uniform, target, scope="layer")
    searched = copy.deepcopy(dense)
    found = search.search(searched, on_val, target, sizes=layer_macs)
    return uniform, searched, {"uniform_macs_kept": macs_kept(uniform, x), "search_allocation": found.sparsities,
                               "search_macs_kept": macs_kept(searched, x)}


def prune_channels(dense, x, on_val, target, joint=False):
    """(uniform, searched, details) with channels removed to `target` of the MACs."""
    ratio = channel_search.uniform_ratio(dense, x, target, cost="macs")
    uniform = copy.deepcopy(dense)
    channel_search.apply_ratios(uniform, x, dict.fromkeys(channel_search.channel_spaces(dense, x), ratio))
    searched = copy.deepcopy(dense)
    found = channel_search.search_channels(searched, x, on_val, target, cost="macs", joint=joint)
    kept = channel_search.cost_meter("macs", x)
    return uniform, searched, {"uniform_ratio": ratio, "uniform_macs_kept": kept(dense, uniform),
                               "search_allocation": found.ratios, "search_macs_kept": found.kept}


def random_allocations(dense, x, target, count, seed):
    """`count` copies of `dense`, each cut to `target` of the MACs by a random allocation: each
    space's share drawn from U(0, 1), all scaled by one factor bisected to the target (at most
    the search grid's top, channel_search.GRID[-1], per space). A control: how far apart do
    allocations land after fine-tuning?"""
    generator, names = torch.Generator().manual_seed(1000 + seed), channel_search.channel_spaces(dense, x)
    kept, models = channel_search.cost_meter("macs", x), []
    while len(models) < count:
        shares = {name: float(torch.rand(1, generator=generator)) for name in names}
        low, high = 0.0, channel_search.GRID[-1] / min(shares.values())
        if kept(dense, scaled_cut(dense, x, shares, high)) > 1 - target:
            continue  # out of reach with these shares: draw again
        for _ in range(12):
            middle = (low + high) / 2
            below = kept(dense, scaled_cut(dense, x, shares, middle)) <= 1 - target
            low, high = (low, middle) if below else (middle, high)
        models.append(scaled_cut(dense, x, shares, high))
    return models


def scaled_cut(dense, x, shares, scale):
    """A copy of `dense` with scale x shares[space] of each space's channels removed (at most the
    grid's top, as the search)."""
    top, model = channel_search.GRID[-1], copy.deepcopy(dense)
    channel_search.apply_ratios(model, x, {name: min(scale * share, top) for name, share in shares.items()})
    return model


def validation_metric(dataset, recover, seed, adaptive_bn=0):
    """Validation accuracy; with `recover` > 0, of a copy first fine-tuned on that many training
    samples (NetAdapt's short-term fine-tuning: closer to what the fine-tuned model will reach);
    with `adaptive_bn` > 0, of a copy whose BatchNorm statistics were re-estimated on that many
    training samples (EagleEye's adaptive BN)."""
    def recovered(model):
        trial = copy.deepcopy(model)
        fit(trial, dataset, FitConfig(epochs=1, lr=0.01, limit=recover, seed=seed), quiet=True, keep_best=False)
        return evaluate(trial, dataset.val)

    if recover:
        return recovered
    if adaptive_bn:
        return lambda m: evaluate(recalibrate_batchnorm(copy.deepcopy(m), dataset.train, adaptive_bn), dataset.val)
    return lambda m: evaluate(m, dataset.val)


def run_seed(dataset, seed, args):
    torch.manual_seed(seed)
    dense = zoo.build(args.model, **({"widths": args.widths} if args.widths else {}))
    fit(dense, dataset, FitConfig(epochs=args.epochs, lr=0.05, seed=seed), quiet=True)
    x = dataset.val.x[:64]
    on_val = validation_metric(dataset, args.recover, seed, args.adaptive_bn)
    prune = prune_channels if args.kind == "channels" else prune_weights
    uniform, searched, result = prune(dense, x, on_val, args.target, args.joint)
    result["dense"] = 100 * evaluate(dense, dataset.test)
    finetune = FitConfig(epochs=args.finetune, lr=0.01, seed=seed)
    for key, model in (("uniform", uniform), ("search", searched)):
        result[f"{key}_before_finetune"] = 100 * evaluate(model, dataset.test)
        fit(model, dataset, finetune, quiet=True)
        result[key] = 100 * evaluate(model, dataset.test)
    randoms = random_allocations(dense, x, args.target, args.random, seed) if args.random else []
    for model in randoms:
        fit(model, dataset, finetune, quiet=True)
    result["random"] = [100 * evaluate(model, dataset.test) for model in randoms]
    result["random_widths"] = [[m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
                               for model in randoms]
    allocation = {k: round(v, 3) for k, v in result["search_allocation"].items()}
    print(f"seed {seed}: dense {result['dense']:.2f} %, uniform {result['uniform']:.2f} % "
          f"(MACs kept {result['uniform_macs_kept']:.3f}), search {result['search']:.2f} % "
          f"(MACs kept {result['search_macs_kept']:.3f}, {allocation})"
          + (f"; random allocations {', '.join(f'{a:.2f}' for a in result['random'])} %" if randoms else ""),
          flush=True)
    return result


def report(runs):
    """Print mean +- std over seeds, the random control and the per-seed differences; the summary."""
    summary = summarize(runs, ("dense", "uniform", "search"), "% test accuracy")
    randoms = [a for r in runs for a in r.get("random", [])]
    if randoms:
        summary["random"] = mean_std(randoms)
        print(f"  random: {summary['random']['mean']:.2f} +- {summary['random']['std']:.2f} % test accuracy "
              f"({len(randoms)} allocations, {min(randoms):.2f}-{max(randoms):.2f})")
    gaps = [r["search"] - r["uniform"] for r in runs]
    summary["search_minus_uniform"] = mean_std(gaps)
    print(f"search - uniform per seed: {', '.join(f'{g:+.2f}' for g in gaps)} (mean "
          f"{summary['search_minus_uniform']['mean']:+.2f} +- {summary['search_minus_uniform']['std']:.2f}); "
          f"search beats uniform on {sum(g > 0 for g in gaps)}/{len(runs)} seeds")
    return summary


def read_runs(paths, parser):
    """The per-seed runs of earlier --json files; a file that is not one is a one-line error."""
    runs = []
    for path in paths:
        try:
            runs += json.loads(Path(path).read_text())["runs"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            parser.error(f"--merge: {path} is not a search_vs_uniform.py --json file ({error!r})")
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("lenet5", "smallcnn", "mnistcnn", "resnet8"), default="lenet5")
    parser.add_argument("--kind", choices=("channels", "weights"), default="channels")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--finetune", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.5, help="fraction of MACs removed")
    parser.add_argument("--recover", type=int, default=0,
                        help="search: score each candidate after fine-tuning a copy on this many samples")
    parser.add_argument("--adaptive-bn", type=int, default=0,
                        help="search: score each candidate after re-estimating its BatchNorm statistics on this many samples")
    parser.add_argument("--joint", action="store_true",
                        help="search: score each step on top of the allocation so far (NetAdapt's greedy)")
    parser.add_argument("--widths", type=lambda s: [int(w) for w in s.split(",")],
                        help="smallcnn / resnet8: channels per stage, e.g. 16,32,64")
    parser.add_argument("--random", type=int, default=0,
                        help="also fine-tune this many random allocations at the same MACs (a control)")
    parser.add_argument("--json")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="no run: report over the seeds of these earlier --json files")
    args = parser.parse_args()
    if args.merge:
        report(read_runs(args.merge, parser))
        return
    if args.joint and args.kind == "weights":
        parser.error("--joint applies to --kind channels only")
    if args.random and args.kind == "weights":
        parser.error("--random applies to --kind channels only")
    if args.widths and args.model not in ("smallcnn", "resnet8"):
        parser.error("--widths applies to smallcnn and resnet8 only")
    torch.set_num_threads(1)
    dataset = data.load("fashion-mnist")
    start = time.time()
    runs = [run_seed(dataset, int(s), args) for s in args.seeds.split(",")]
    summary = report(runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary,
                                               "seconds": time.time() - start}, indent=2))


if __name__ == "__main__":
    main()
