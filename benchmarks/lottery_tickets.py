"""Lottery tickets against two papers, mean +- std over seeds (prunekit.lottery.find_ticket).

Both: iterative magnitude pruning, layer-wise, the surviving weights reset to their initial
values after each round, each round trained from there with the same recipe. The best
epoch of each training is picked on the validation split; test accuracy is reported.

MNIST-1D (Greydanus & Kobak, the mnist1d lottery-ticket notebook): MLP 40-500-500-10, Adam
lr 2e-2, batch 100, about 1500 steps (42 epochs of the 3600-sample training split), every
layer pruned 20 % per round; 11 rounds leave 8.6 % of the weights (91.4 % sparsity). They
report dense ~65 %, ticket 72-75 % at 91 %, random mask ~61 %. Control: random masks with
the same per-layer counts, from the same initial weights. Goal: ticket >= random + 5 points.

LeNet-300-100 on MNIST (Frankle & Carbin 2019): Adam lr 1.2e-3, batch 60, hidden layers 20 %
per round, output layer 10 %; tickets at 21 % (round 7) and 13.5 % (round 9) of the weights
left. Control: the same masks, fresh random initialisation. Goal: the tickets match or beat
the dense net and beat the control. The paper trains 50k iterations (60 epochs); we train
--lenet-epochs (default 20) to fit a session, and decay the learning rate with a cosine
(prunekit.train.fit's schedule) where the paper keeps it constant: both stated in the JSON.

    python benchmarks/lottery_tickets.py [--seeds 0,1,2] [--only mnist1d|lenet300]
        [--lenet-epochs 20] [--json f]
"""
import argparse
import copy
import json
import time
from pathlib import Path

import torch

from _stats import mean_std
from prunekit import data, zoo
from prunekit.train import FitConfig, evaluate, fit
from prunekit.training import lottery

PAPER = {"mnist1d": {"dense": 65.0, "ticket_91": (72.0, 75.0), "random_91": 61.0},
         "lenet300": "tickets at 21 % and 13.5 % of weights match or beat dense, beat reinit"}


def _train(dataset, config):
    def train(model, on_step):
        fit(model, dataset, config, quiet=True, on_step=on_step)
        return {"val": 100 * evaluate(model, dataset.val), "test": 100 * evaluate(model, dataset.test)}
    return train


def _control(model, train, how, seed, initial):
    """Train a copy of the round's starting point with its masks randomised or its weights re-drawn."""
    control = copy.deepcopy(model)
    if how == "random-mask":
        lottery.random_masks(control, seed)
        lottery.rewind(control, initial)
    else:
        lottery.reinitialize(control, seed)
    return train(control, lambda x, y: None)


def run(name, dataset, build, config, rounds, rate, overrides, control_rounds, control, seed):
    torch.manual_seed(seed)
    model = build()
    initial = lottery.snapshot(model)
    train = _train(dataset, config)
    controls = {}

    def train_round(net, on_step):
        round_ = len(controls.setdefault("_seen", []))
        controls["_seen"].append(round_)
        if round_ in control_rounds:
            controls[round_] = _control(net, train, control, seed + 1000, initial)
        return train(net, on_step)

    history = lottery.find_ticket(model, train_round, rounds=rounds, rate=rate, overrides=overrides)
    rows = []
    for h in history:
        row = {"round": h["round"], "weights_left": 100 * (1 - h["sparsity"]), **h["result"]}
        if h["round"] in controls:
            row[control] = controls[h["round"]]
        rows.append(row)
        extra = f", {control} {row[control]['test']:.2f} %" if control in row else ""
        print(f"{name} seed {seed} round {h['round']:>2}: {row['weights_left']:5.1f} % left, "
              f"test {row['test']:.2f} %{extra}", flush=True)
    return rows


def mnist1d(seed):
    dataset = data.load("mnist1d")
    config = FitConfig(epochs=42, lr=2e-2, batch_size=100, optimizer="adam", weight_decay=0.0, seed=seed)
    return run("mnist1d", dataset, lambda: zoo.build("mlp1d"), config, rounds=11, rate=0.2,
               overrides=None, control_rounds={11}, control="random-mask", seed=seed)


def lenet300(seed, epochs):
    dataset = data.load("mnist")
    config = FitConfig(epochs=epochs, lr=1.2e-3, batch_size=60, optimizer="adam", weight_decay=0.0, seed=seed)
    return run("lenet300", dataset, lambda: zoo.build("lenet300"), config, rounds=9, rate=0.2,
               overrides={r"net\.5": 0.1}, control_rounds={7, 9}, control="reinit", seed=seed)


def summarize(runs, control):
    """Per round: weights left and test accuracy (and the control's) over seeds."""
    out = []
    for index in range(len(runs[0])):
        rows = [r[index] for r in runs]
        entry = {"round": rows[0]["round"], "weights_left": rows[0]["weights_left"],
                 "test": mean_std([r["test"] for r in rows])}
        if control in rows[0]:
            entry[control] = mean_std([r[control]["test"] for r in rows])
        out.append(entry)
    return out


def print_summary(name, summary, control):
    print(f"\n{name}: test accuracy %, mean +- std over seeds")
    for e in summary:
        extra = f"   {control} {e[control]['mean']:.2f} +- {e[control]['std']:.2f}" if control in e else ""
        print(f"  round {e['round']:>2}  {e['weights_left']:5.1f} % left  ticket {e['test']['mean']:.2f} "
              f"+- {e['test']['std']:.2f}{extra}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", choices=("mnist1d", "lenet300"))
    parser.add_argument("--lenet-epochs", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"seeds": seeds, "paper": PAPER}
    start = time.time()
    if args.only in (None, "mnist1d"):
        runs = [mnist1d(s) for s in seeds]
        result["mnist1d"] = {"runs": runs, "summary": summarize(runs, "random-mask")}
        print_summary("MNIST-1D 40-500-500-10", result["mnist1d"]["summary"], "random-mask")
    if args.only in (None, "lenet300"):
        runs = [lenet300(s, args.lenet_epochs) for s in seeds]
        result["lenet300"] = {"runs": runs, "summary": summarize(runs, "reinit"), "epochs": args.lenet_epochs,
                              "lr_schedule": "cosine (paper: constant)"}
        print_summary("LeNet-300-100 on MNIST", result["lenet300"]["summary"], "reinit")
    result["seconds"] = time.time() - start
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
