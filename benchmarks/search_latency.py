"""Channel search to a latency target measured on this machine, against uniform (issue 4).

LeNet-5 (Caffe variant) on MNIST (or --dataset fashion-mnist), trained --epochs (SGD lr 0.05 cosine). Target: --target of
the dense model's latency removed, batch --batch, --threads threads, latency timed side by
side with the dense model (interleaved, median). Two ways to get there:
  - uniform: one channel ratio for every space, bisected on measured latency
    (channel_search.uniform_ratio(cost="latency"));
  - search: channel_search.search_channels(cost="latency"): validation curves one space at a
    time, greedy on accuracy lost per latency saved, measured and bisected to the target;
then both fine-tuned alike (--finetune epochs, lr 0.01). Finally all three are timed again in
one fresh interleaved loop (--repeats): the speedups reported are that measurement, not the
search's own. Test accuracy, mean +- std over seeds.

    python benchmarks/search_latency.py [--dataset mnist] [--seeds 0,1,2] [--epochs 3] [--finetune 1] [--target 0.5]
        [--batch 64] [--threads 1] [--repeats 100] [--json f]
"""
import argparse
import copy
import json
import time
from pathlib import Path

import torch

from _stats import summarize
from prunekit import data, zoo
from prunekit.measure.latency import time_models
from prunekit.search import channels as channel_search
from prunekit.structured import channel_spaces
from prunekit.train import FitConfig, evaluate, fit


def run_seed(dataset, seed, args):
    torch.manual_seed(seed)
    dense = zoo.build("lenet5")
    fit(dense, dataset, FitConfig(epochs=args.epochs, lr=0.05, seed=seed), quiet=True)
    x = dataset.val.x[:args.batch]
    on_val = lambda m: evaluate(m, dataset.val)  # noqa: E731
    timing = dict(threads=args.threads, repeats=20)
    ratio = channel_search.uniform_ratio(dense, x, args.target, cost="latency", **timing)
    uniform = copy.deepcopy(dense)
    channel_search.apply_ratios(uniform, x, dict.fromkeys(channel_spaces(dense, x), ratio))
    searched = copy.deepcopy(dense)
    found = channel_search.search_channels(searched, x, on_val, args.target, cost="latency", **timing)
    result = {"dense": 100 * evaluate(dense, dataset.test), "uniform_ratio": ratio, "search_ratios": found.ratios}
    for key, model in (("uniform", uniform), ("search", searched)):
        fit(model, dataset, FitConfig(epochs=args.finetune, lr=0.01, seed=seed), quiet=True)
        result[key] = 100 * evaluate(model, dataset.test)
    timed = time_models({"dense": dense, "uniform": uniform, "search": searched}, (x,), repeats=args.repeats,
                        warmup=10, threads=args.threads)
    for key in ("uniform", "search"):
        result[f"{key}_speedup"] = timed["dense"]["median_s"] / timed[key]["median_s"]
    ratios = {k: round(v, 3) for k, v in found.ratios.items()}
    print(f"seed {seed}: dense {result['dense']:.2f} %; uniform (ratio {ratio:.3f}) {result['uniform']:.2f} % at "
          f"{result['uniform_speedup']:.2f}x; search {ratios} {result['search']:.2f} % at "
          f"{result['search_speedup']:.2f}x", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune", type=int, default=1)
    parser.add_argument("--target", type=float, default=0.5, help="fraction of the latency removed")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = data.load(args.dataset)
    start = time.time()
    runs = [run_seed(dataset, int(s), args) for s in args.seeds.split(",")]
    summary = summarize(runs, ("dense", "uniform", "search"), "% test accuracy")
    summary.update(summarize(runs, ("uniform_speedup", "search_speedup"), "x measured speedup"))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary,
                                               "seconds": time.time() - start}, indent=2))


if __name__ == "__main__":
    main()
