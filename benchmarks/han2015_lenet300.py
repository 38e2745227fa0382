"""Han et al. 2015 (Learning both Weights and Connections), LeNet-300-100 on MNIST.

Paper: 1.64 % test error dense -> 1.59 % at 12x compression (8 % of weights left), by
iterative magnitude pruning with retraining. We train the dense net, then prune iteratively
through 2x, 4x, 8x, 12x, 16x, 32x (global and layer-wise scope), fine-tuning (8 epochs,
SGD lr 0.05 cosine, batch 64, weight decay 1e-4) after each step, and report test error at each
stage: mean +- std over seeds. Validation picks the best fine-tuning epoch; the test split
is read once per stage.

    python benchmarks/han2015_lenet300.py [--seeds 0,1,2] [--epochs 30] [--finetune 8] [--json f]
"""
import argparse
import json
from pathlib import Path

import torch

import prunekit as pk
from _stats import mean_std
from prunekit import data, zoo
from prunekit.train import FitConfig, evaluate, fit

COMPRESSIONS = (2, 4, 8, 12, 16, 32)
# Picked from a small sweep (lr 0.01/0.02/0.05/0.1, batch 64/128, weight decay 0/1e-4/5e-4).
def finetune_config(epochs, seed):
    return FitConfig(epochs=epochs, lr=0.05, batch_size=64, weight_decay=1e-4, seed=seed)


PAPER = {"dense_error": 1.64, "pruned_error": 1.59, "compression": 12}


def run_seed(mnist, seed, epochs, finetune, scopes):
    torch.manual_seed(seed)
    dense = zoo.build("lenet300")
    fit(dense, mnist, FitConfig(epochs=epochs, lr=0.1, weight_decay=1e-4, seed=seed), quiet=True)
    result = {"dense": 100 * (1 - evaluate(dense, mnist.test))}
    for scope in scopes:
        model = zoo.build("lenet300")
        model.load_state_dict(dense.state_dict())
        for compression in COMPRESSIONS:
            # Output layer: Han et al. keep more of it; layer scope prunes every layer alike.
            pk.prune_magnitude(model, 1 - 1 / compression, scope=scope)
            fit(model, mnist, finetune_config(finetune, seed), quiet=True)
            result[f"{scope}@{compression}x"] = 100 * (1 - evaluate(model, mnist.test))
            print(f"seed {seed} {scope:>6} {compression:>2}x: test error {result[f'{scope}@{compression}x']:.2f} %"
                  f" (dense {result['dense']:.2f} %)", flush=True)
    return result


def summarize(results):
    keys = results[0].keys()
    return {key: mean_std(r[key] for r in results) for key in keys}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--finetune", type=int, default=8)
    parser.add_argument("--scopes", default="global,layer")
    parser.add_argument("--json")
    args = parser.parse_args()
    mnist = data.load("mnist")
    seeds = [int(s) for s in args.seeds.split(",")]
    results = [run_seed(mnist, s, args.epochs, args.finetune, args.scopes.split(",")) for s in seeds]
    summary = summarize(results)
    print(f"\nLeNet-300-100 on MNIST, test error % (mean +- std over {len(seeds)} seeds); "
          f"paper: {PAPER['dense_error']} dense, {PAPER['pruned_error']} at 12x")
    for key, stats in summary.items():
        print(f"{key:>14}: {stats['mean']:.2f} +- {stats['std']:.2f}")
    dense = summary["dense"]["mean"]
    for scope in args.scopes.split(","):
        held = [c for c in COMPRESSIONS if summary[f"{scope}@{c}x"]["mean"] <= dense + 0.1]
        print(f"{scope}: within dense + 0.1 points up to {max(held) if held else 'none'}x; "
              f"12x goal {'met' if 12 in held else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seeds": seeds, "runs": results, "summary": summary,
                                               "paper": PAPER}, indent=2))


if __name__ == "__main__":
    main()
