"""Automatic per-layer search vs uniform sparsity at a 50 % MACs target (issue 4).

LeNet-5 (Caffe variant) on Fashion-MNIST. The dense net is trained (--epochs, SGD lr 0.05
cosine, batch 128), then pruned two ways to the same theoretical MACs (MACs x weight
density, summed over layers: half of the dense model's):
  - uniform: every layer at 50 % sparsity (that halves every layer's MACs);
  - search: prunekit.search.search with each layer's MACs as its size, the validation
    split's sensitivity curves (one layer pruned at a time, magnitude) deciding where the
    budget goes, greedily;
each fine-tuned the same (--finetune epochs, lr 0.01). Test accuracy, mean +- std over
seeds; the search reads only the validation split.

    python benchmarks/search_vs_uniform.py [--seeds 0,1,2] [--epochs 8] [--finetune 3]
        [--target 0.5] [--json f]
"""
import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

import prunekit as pk
from prunekit import data, search, zoo
from prunekit.measure.macs import layer_stats, totals
from prunekit.train import FitConfig, evaluate, fit


def macs_kept(model, x):
    stats = totals(layer_stats(model, (x,)))
    return stats["effective_macs"] / stats["macs"]


def run_seed(dataset, seed, args):
    torch.manual_seed(seed)
    dense = zoo.build("lenet5")
    fit(dense, dataset, FitConfig(epochs=args.epochs, lr=0.05, seed=seed), quiet=True)
    x = dataset.val.x[:64]
    layer_macs = {s["name"]: s["macs"] for s in layer_stats(dense, (x,))}
    finetune = FitConfig(epochs=args.finetune, lr=0.01, seed=seed)
    on_val = lambda m: evaluate(m, dataset.val)  # noqa: E731
    result = {"dense": 100 * evaluate(dense, dataset.test)}

    uniform = copy.deepcopy(dense)
    pk.prune_magnitude(uniform, args.target, scope="layer")
    result["uniform_macs_kept"] = macs_kept(uniform, x)
    fit(uniform, dataset, finetune, quiet=True)
    result["uniform"] = 100 * evaluate(uniform, dataset.test)

    searched = copy.deepcopy(dense)
    found = search.search(searched, on_val, args.target, sizes=layer_macs)
    result["search_allocation"] = found.sparsities
    result["search_macs_kept"] = macs_kept(searched, x)
    result["search_weights_sparsity"] = pk.sparsity(searched)["global"]["sparsity"]
    fit(searched, dataset, finetune, quiet=True)
    result["search"] = 100 * evaluate(searched, dataset.test)
    print(f"seed {seed}: dense {result['dense']:.2f} %, uniform {result['uniform']:.2f} % "
          f"(MACs kept {result['uniform_macs_kept']:.3f}), search {result['search']:.2f} % "
          f"(MACs kept {result['search_macs_kept']:.3f}, weights pruned {result['search_weights_sparsity']:.3f}, "
          f"{found.sparsities})", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--finetune", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.5, help="fraction of MACs removed")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = data.load("fashion-mnist")
    start = time.time()
    runs = [run_seed(dataset, int(s), args) for s in args.seeds.split(",")]
    summary = {}
    for key in ("dense", "uniform", "search"):
        values = [r[key] for r in runs]
        summary[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        print(f"{key:>8}: {summary[key]['mean']:.2f} +- {summary[key]['std']:.2f} % test accuracy")
    wins = sum(r["search"] > r["uniform"] for r in runs)
    print(f"search beats uniform on {wins}/{len(runs)} seeds")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary,
                                               "seconds": time.time() - start}, indent=2))


if __name__ == "__main__":
    main()
