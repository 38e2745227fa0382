"""pk.to_sparse beside a busy CPU: does the kernel choice survive one other CPU-bound process?

Starts one CPU-bound process itself (a one-thread torch matmul loop, or a pure Python loop) and
keeps it running; then, in each of N fresh Python processes (the choice is made afresh each
time, as by a user's script), builds the models of benchmarks/sparse_kernels.py, runs
pk.to_sparse at batch 1, and times the chosen model against dense side by side, interleaved
(sparse_kernels.timed: measure.time_models, ratio of medians):
- mlp: the MLP 4096-4096-4096-4096 magnitude-pruned per layer to 90 %;
- nm: one 4096x4096 layer pruned 2:4.
Per process: the speedups, the kernels chosen, each layer's reason, the whole-model check and
how long to_sparse took. Prints how many of the N processes keep the MLP at >= 5x (and the
2:4 layer at >= 1.5x).

    python benchmarks/busy_machine.py [--processes 10] [--threads 2] [--repeats 30]
        [--load matmul|python|none] [--parts mlp,nm] [--json FILE]
"""
import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import prunekit as pk
from sparse_kernels import kernels_of, mlp, pruned, timed

# counted per part: the MLP at 90 %, batch 1 ran 10.7x on a quiet machine (the goal beside a busy
# process is 5x); the 2:4 layer 2.1x (1.5x counted here, no goal set)
GOALS = {"mlp": 5.0, "nm": 1.5}
LOADS = {  # one CPU-bound thread, forever (killed by the parent)
    "matmul": "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a @ a",
    "python": "while True:\n    pass",
}


def nm_layer():
    model = mlp(layers=1)
    pk.prune_nm(model, 2, 4)
    return pk.make_permanent(model)


def measure_part(name, model, args) -> dict:
    """to_sparse at batch 1 on a copy, then chosen vs dense, interleaved."""
    x = torch.randn(1, 4096)
    begun = time.perf_counter()
    chosen = pk.to_sparse(copy.deepcopy(model), x)
    choose_s = time.perf_counter() - begun
    t = timed({"dense": model, "sparse": chosen}, x, args)
    report = chosen.to_sparse_report
    return {"part": name, "speedup": t["dense"]["median_s"] / t["sparse"]["median_s"], "times": t,
            "kernels": kernels_of(chosen), "to_sparse_s": choose_s, "model_check": report["model"],
            "layers": {layer: {k: row[k] for k in ("kernel", "prior_kernel", "reason", "speedup", "rounds")}
                       for layer, row in report["layers"].items()}}


def child(args) -> None:
    """One fresh process: every part, printed as one JSON line."""
    torch.set_num_threads(args.threads)
    parts = {"mlp": lambda: pruned(mlp(), 0.9), "nm": nm_layer}
    rows = [measure_part(name, parts[name](), args) for name in args.parts.split(",")]
    print(json.dumps(rows))


def run_children(args) -> list:
    """[[row per part] per process], each process a fresh interpreter running this file's child."""
    results = []
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--parts", args.parts]
    for i in range(args.processes):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"process {i + 1} failed:\n{done.stderr[-3000:]}")
        rows = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(rows)
        print(f"process {i + 1}: " + "; ".join(
            f"{r['part']} {r['speedup']:.2f}x ({','.join(r['kernels'])}), to_sparse {r['to_sparse_s']:.1f} s"
            for r in rows), flush=True)
    return results


def summary(results) -> dict:
    """Per part: the speedups over the processes, their median and how many reach the part's goal."""
    speedups = {}
    for rows in results:
        for row in rows:
            speedups.setdefault(row["part"], []).append(row["speedup"])
    return {part: {"speedups": s, "median": statistics.median(s), "goal": GOALS[part],
                   "at_least_goal": sum(x >= GOALS[part] for x in s), "processes": len(s)}
            for part, s in speedups.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--load", choices=[*LOADS, "none"], default="matmul")
    parser.add_argument("--parts", default="mlp,nm")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    load = None if args.load == "none" else subprocess.Popen([sys.executable, "-c", LOADS[args.load]])
    started = time.perf_counter()
    try:
        time.sleep(1.0)  # the load is running before the first choice
        results = run_children(args)
    finally:
        if load is not None:
            load.kill()
            load.wait()
    result = {"machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                          "cpu": platform.processor() or platform.machine()},
              "threads": args.threads, "repeats": args.repeats, "load": args.load,
              "load_command": LOADS.get(args.load), "processes": results, "summary": summary(results),
              "seconds": time.perf_counter() - started}
    for part, s in result["summary"].items():
        print(f"{part}: median {s['median']:.2f}x; {s['at_least_goal']} of {s['processes']} processes "
              f">= {s['goal']:g}x", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
