"""LLM decode on sparse kernels: Gemma-3 270M pruned by Wanda (50 % and 2:4), its transformer
blocks' Linear layers on pk.to_sparse's kernels (chosen at one token, batch 1), against the
dense model, side by side in one process: greedy generation tokens/s, and the time spent inside
the transformer blocks per token (the tied embedding / LM head stays dense and is read at every
step: 168M of the model's 268M parameters, so whole-step speed is bounded by it).

    python benchmarks/llm_decode.py [--model gemma3-270m|DIR] [--tokens 32] [--repeats 3] [--kernels SPECS]
        [--json FILE]
"""
import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from prunekit import llm
from prunekit.data import assets
from prunekit.deploy import SparseLinear, formats, to_sparse
from prunekit.llm.blocks import find_blocks

PROMPT = "The Python tutorial explains how to"


class Clock:
    """Seconds spent inside the given modules (forward hooks on each; they must not nest)."""

    def __init__(self, modules):
        self.seconds, self.started = 0.0, 0.0
        self.handles = [h for m in modules for h in (m.register_forward_pre_hook(self._start),
                                                     m.register_forward_hook(self._stop))]

    def _start(self, *args):
        self.started = time.perf_counter()

    def _stop(self, *args):
        self.seconds += time.perf_counter() - self.started

    def remove(self):
        for handle in self.handles:
            handle.remove()


def block_clock(model) -> Clock:
    return Clock(find_blocks(model)[1])


def decode(model, clock, ids, tokens) -> dict:
    clock.seconds = 0.0
    started = time.perf_counter()
    out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    total = time.perf_counter() - started
    return {"tokens_per_s": tokens / total, "block_s_per_token": clock.seconds / tokens, "ids": out}


def side_by_side(models: dict, tokenizer, tokens, repeats) -> dict:
    ids = tokenizer(PROMPT, return_tensors="pt")
    clocks = {name: block_clock(m) for name, m in models.items()}
    runs = {name: [] for name in models}
    with torch.no_grad():
        for name, m in models.items():
            decode(m, clocks[name], ids, 4)  # warm-up
        for r in range(repeats):
            order = list(models)[r % len(models):] + list(models)[:r % len(models)]
            for name in order:
                runs[name].append(decode(models[name], clocks[name], ids, tokens))
    result = {}
    for name, rs in runs.items():
        result[name] = {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                        "block_ms_per_token": 1e3 * statistics.median(r["block_s_per_token"] for r in rs),
                        "sample": tokenizer.decode(rs[-1]["ids"][0][ids["input_ids"].shape[1]:],
                                                   skip_special_tokens=True)}
    return result


def linear_bound(plan) -> dict:
    """What the blocks' Linear layers could gain if each ran its fastest kernel, from to_sparse's
    own per-layer timings: sum of dense medians over sum of best medians."""
    dense = sum(row["seconds"]["dense"] for row in plan.values())
    best = sum(min(row["seconds"].values()) for row in plan.values())
    return {"layers": len(plan), "dense_s": dense, "best_s": best, "speedup": dense / best}


def linear_split(models: dict, tokenizer, tokens) -> dict:
    """{name: {"block_ms", "linear_ms"}} per token: one more generation of each model with hooks
    on its blocks and on the Linear layers inside them (the hooks cost a little: this pass only
    splits the time, the speeds come from the unhooked runs)."""
    ids = tokenizer(PROMPT, return_tensors="pt")
    out = {}
    for name, model in models.items():
        _, blocks = find_blocks(model)
        blocks_clock = Clock(blocks)
        linear_clock = Clock([m for b in blocks for m in b.modules() if isinstance(m, (torch.nn.Linear, SparseLinear))])
        with torch.no_grad():
            model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        blocks_clock.remove(), linear_clock.remove()
        out[name] = {"block_ms": 1e3 * blocks_clock.seconds / tokens, "linear_ms": 1e3 * linear_clock.seconds / tokens}
    return out


def bytes_ratios(model) -> dict:
    """Dense fp32 bytes of the blocks' Linear weights over the bytes of the forms the chosen
    kernels read ("chosen"), and over the smallest lossless form of each (delta8, the row
    bitmask, or packed N:M where the weight fits it: "smallest"), the least any of our kernels
    could read."""
    _, blocks = find_blocks(model)
    dense = chosen = smallest = 0
    for m in (m for b in blocks for m in b.modules()):
        if isinstance(m, SparseLinear):
            weight, read = m.dense_weight(), formats.nbytes(m.parts())
        elif isinstance(m, torch.nn.Linear):
            weight = m.weight.detach()
            read = 4 * weight.numel()
        else:
            continue
        pattern = formats.nm_pattern(weight)
        forms = [formats.to_delta8(weight), formats.to_bitmask(weight)] + \
            ([formats.to_nm(weight, *pattern)] if pattern else [])
        dense, chosen = dense + 4 * weight.numel(), chosen + read
        smallest += min(formats.nbytes(f) for f in forms)
    return {"chosen": dense / chosen, "smallest": dense / smallest}


def kernel_counts(model) -> dict:
    counts = {}
    for m in model.modules():
        if isinstance(m, SparseLinear):
            counts[m.kernel] = counts.get(m.kernel, 0) + 1
        elif type(m) is torch.nn.Linear:
            counts["dense"] = counts.get("dense", 0) + 1
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kernels", help="comma-separated kernel specs to_sparse may choose from "
                        "(default all; e.g. dense,csr16/1t,delta8/1t,nm/1t: one thread only)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = assets.require(args.model) if args.model in assets.MODELS else args.model
    texts = assets.require("python-docs")
    dense, tokenizer = llm.load(folder)
    batches = llm.calibration(tokenizer, (texts / "howto.txt").read_text(), n=args.n, seq_len=512)
    one_token = {"input_ids": tokenizer(PROMPT, return_tensors="pt")["input_ids"][:, :1]}
    rows = []
    for label, pattern in (("wanda 50 %", None), ("wanda 2:4", "2:4")):
        pruned = copy.deepcopy(dense)
        llm.prune(pruned, batches, method="wanda", sparsity=0.5, pattern=pattern)
        plan = {}
        sparse = to_sparse(copy.deepcopy(pruned), one_token, report=plan,
                           kernels=args.kernels.split(",") if args.kernels else None)
        timing = side_by_side({"dense": dense, "pruned": pruned, "sparse": sparse}, tokenizer, args.tokens,
                              args.repeats)
        row = {"method": label, "kernels": kernel_counts(sparse), "timing": timing,
               "tokens_speedup": timing["sparse"]["tokens_per_s"] / timing["dense"]["tokens_per_s"],
               "block_speedup": timing["dense"]["block_ms_per_token"] / timing["sparse"]["block_ms_per_token"],
               "same_tokens_as_pruned": timing["sparse"]["sample"] == timing["pruned"]["sample"],
               "linear_bound": linear_bound(plan),
               "split": linear_split({"dense": dense, "sparse": sparse}, tokenizer, args.tokens),
               "bytes_ratio": bytes_ratios(sparse)}
        split = row["split"]["dense"]
        rest = split["block_ms"] - split["linear_ms"]
        row["block_bound"] = split["block_ms"] / (rest + split["linear_ms"] / row["bytes_ratio"]["smallest"])
        rows.append(row)
        print(f"{label}: split {row['split']}, bytes ratios {row['bytes_ratio']}, "
              f"blocks' bytes bound {row['block_bound']:.2f}x")
        print(f"{label}: tokens/s {row['tokens_speedup']:.2f}x, blocks {row['block_speedup']:.2f}x, "
              f"Linear layers at best {row['linear_bound']['speedup']:.2f}x "
              f"({row['kernels']}); same greedy text as the masked model: {row['same_tokens_as_pruned']}",
              flush=True)
        del pruned, sparse
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "tokens": args.tokens, "repeats": args.repeats,
                                         "kernels": args.kernels or "all",
                                         "threads": args.threads, "prompt": PROMPT, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
