"""How much realized speedup is possible at all: a per-layer bound for 50 % channel pruning.

Issue 3 asks for (latency gain) / (MACs reduction) >= 0.85 at 50 % channels. Removing half
the channels quarters the work of a dense convolution (inputs and outputs both halve) but
only halves the work of everything whose cost follows the activations: depthwise
convolutions, BatchNorm, activations, pooling, adds, the stem (3 fixed inputs) and the
classifier (fixed outputs). MACs count only convolutions and linears, so time spent in
the rest caps the ratio below 1 whatever the kernels do.

This script times every leaf module of the dense model (forward hooks, eager, --threads,
median over --repeats forward passes) and gives each its best case at ratio r (--ratio):
a dense conv (groups 1, more than 3 inputs) runs (1 - r)^2 of its time, a Linear or conv with
fixed inputs or outputs, a depthwise conv and every other module (1 - r) of theirs; time
outside leaf modules (functional adds, Python) also (1 - r). The resulting latency is the
best a pruned model can do if every kernel keeps the efficiency it had in the dense model, and
    bound = (dense latency / bound latency) / (dense MACs / pruned MACs)
the efficiency that implies (the MACs ratio is prunekit's, from a real 50 % prune). It is not
a hard limit: smaller activations can fit a cache the dense ones did not, and then the pruned
kernels run faster per MAC (EfficientNet-Lite0 at batch 32, eager, beats it). A second bound treats BatchNorm and activation modules as free, as
if folded into the convolutions (the "frozen" deployment form folds them, roughly).

    python benchmarks/speedup_bound.py [--models resnet50,tf_efficientnet_lite0] [--batches 1,32]
        [--ratio 0.5] [--repeats 20] [--threads 2] [--json f]
"""
import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

import prunekit as pk
from prunekit.measure.macs import layer_stats, totals
from realized_speedup import build

FOLDABLE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Identity, nn.Dropout)


def scaling(module, keep):
    """The fraction of a module's time it keeps at best when `keep` of its channels stay."""
    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.in_channels > 3:
        return keep * keep
    return keep


def leaf_times(model, x, repeats, threads):
    """({leaf module: seconds per forward, all its calls}, seconds per forward), from the
    median forward of `repeats` timed with the hooks on (so the parts add up to the whole;
    a hook costs about a microsecond, against milliseconds of convolution)."""
    leaves = [m for m in model.modules() if not list(m.children())]
    torch.set_num_threads(threads)
    starts, spent, runs = {}, {}, []
    hooks = [m.register_forward_pre_hook(lambda m, a: starts.__setitem__(m, time.perf_counter())) for m in leaves]
    hooks += [m.register_forward_hook(  # a module called twice per forward (a shared ReLU) adds both
        lambda m, a, o: spent.__setitem__(m, spent.get(m, 0.0) + time.perf_counter() - starts[m])) for m in leaves]
    with torch.no_grad():
        for i in range(repeats + 3):  # 3 warm-up forwards first
            spent.clear()
            start = time.perf_counter()
            model(x)
            runs.append((time.perf_counter() - start, dict(spent)))
    for hook in hooks:
        hook.remove()
    total, parts = sorted(runs[3:], key=lambda run: run[0])[repeats // 2]  # the median forward
    return {m: parts.get(m, 0.0) for m in leaves}, total


def bound(name, batch, args):
    dense = build(name)
    x = torch.randn(batch, 3, 224, 224)
    pruned = pk.prune_structured(copy.deepcopy(dense), torch.randn(1, 3, 224, 224), ratio=args.ratio).model
    macs = [totals(layer_stats(m, (x[:1],)))["macs"] for m in (dense, pruned)]
    per_module, total = leaf_times(dense, x, args.repeats, args.threads)
    keep = 1 - args.ratio
    outside = max(total - sum(per_module.values()), 0.0)
    best = sum(t * scaling(m, keep) for m, t in per_module.items()) + outside * keep
    quarter = sum(t for m, t in per_module.items() if scaling(m, keep) == keep * keep)
    row = {"model": name, "batch": batch, "dense_ms": 1e3 * total, "dense_conv_share": quarter / total,
           "macs_ratio": macs[0] / macs[1], "best_speedup": total / best}
    row["efficiency_bound"] = row["best_speedup"] / row["macs_ratio"]
    # as if BatchNorm and activations were folded into the convs for free (frozen deployment)
    fused = {m: t for m, t in per_module.items() if not isinstance(m, FOLDABLE)}
    row["efficiency_bound_fused"] = (sum(fused.values()) + outside) / (
        sum(t * scaling(m, keep) for m, t in fused.items()) + outside * keep) / row["macs_ratio"]
    print(f"{name:>22} batch {batch:>3}: {row['dense_ms']:7.1f} ms dense, {100 * row['dense_conv_share']:4.1f} % "
          f"of it in dense convs; MACs ratio {row['macs_ratio']:.2f}, best speedup {row['best_speedup']:.2f}, "
          f"efficiency bound {row['efficiency_bound']:.2f} (BatchNorm and activations free: "
          f"{row['efficiency_bound_fused']:.2f})", flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,tf_efficientnet_lite0")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [bound(name, int(b), args) for name in args.models.split(",") for b in args.batches.split(",")]
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
