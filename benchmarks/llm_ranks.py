"""Distributed calibration: llm.prune (Wanda, 50 %) on Gemma-3 270M under torchrun with 2 ranks of
1 thread each, against 1 rank of 1 thread, side by side in one run; the same masks?

Each configuration runs in its own torchrun job (2 then 1 process, then 2 and 1 again when
--repeats 2), every process with one thread. The time is llm.prune's own wall time on rank 0
(after a barrier: loading is not counted); rank 0 writes the masks of every pruned matrix
packed to bits, and the runs' masks are compared bit for bit.

    python benchmarks/llm_ranks.py [--n 16] [--seq-len 512] [--method wanda] [--repeats 2] [--json FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args, out: Path) -> None:
    """One process of a torchrun job."""
    import numpy as np
    import torch

    from prunekit import llm
    from prunekit.data import assets
    from prunekit.llm.blocks import find_blocks
    from prunekit.llm.layers import block_layers
    from prunekit.train import distributed
    torch.set_num_threads(1)
    rank, world = distributed.start()
    model, tokenizer = llm.load(assets.require("gemma3-270m"))
    text = (assets.require("python-docs") / "howto.txt").read_text()
    batches = llm.calibration(tokenizer, text, n=args.n, seq_len=args.seq_len, seed=0)
    distributed.barrier()
    started = time.perf_counter()
    report = llm.prune(model, batches, method=args.method, sparsity=0.5)
    seconds = time.perf_counter() - started
    if rank == 0:
        _, blocks = find_blocks(model)
        masks = np.concatenate([np.packbits((layer.weight != 0).numpy().ravel()) for block in blocks
                                for layer in block_layers(block).values()])
        np.save(out.with_suffix(".npy"), masks)
        out.write_text(json.dumps({"ranks": world, "seconds": seconds, "sparsity": report.sparsity}))


def job(args, ranks: int, out: Path) -> dict:
    torchrun = Path(sys.executable).with_name("torchrun")
    # the worker's options go by environment: torchrun's parser would take --n as its own --nnodes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "LLM_RANKS_STEP": json.dumps({**vars(args), "out": str(out)})}
    done = subprocess.run([str(torchrun), "--nproc-per-node", str(ranks), "--master-port", str(29600 + ranks),
                           __file__], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"torchrun with {ranks} rank(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--method", default="wanda")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json")
    if "LLM_RANKS_STEP" in os.environ:
        step = json.loads(os.environ["LLM_RANKS_STEP"])
        worker(argparse.Namespace(**step), Path(step["out"]))
        return
    args = parser.parse_args()
    import numpy as np
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for ranks in (2, 1):  # taking turns, so a drift in the machine's speed hits both
                out = Path(tmp) / f"r{ranks}-{repeat}.json"
                rows.append({**job(args, ranks, out), "repeat": repeat})
                rows[-1]["masks"] = np.load(out.with_suffix(".npy"))
                print(f"{ranks} rank(s): {rows[-1]['seconds']:.1f} s", flush=True)
        reference = rows[-1]["masks"]
        for row in rows:
            row["same_masks_as_last_one_rank_run"] = bool(np.array_equal(row.pop("masks"), reference))
    best = {r: min(row["seconds"] for row in rows if row["ranks"] == r) for r in (1, 2)}
    result = {"model": "gemma3-270m", "method": args.method, "sparsity": 0.5, "threads_per_rank": 1,
              "calibration": {"text": "python-docs howto.txt", "sequences": args.n, "seq_len": args.seq_len},
              "rows": rows, "speedup_2_over_1": best[1] / best[2]}
    print(f"2 ranks over 1: {result['speedup_2_over_1']:.2f}x (fastest of {args.repeats} each); "
          f"masks equal: {all(r['same_masks_as_last_one_rank_run'] for r in rows)}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
