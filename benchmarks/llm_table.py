"""One-shot LLM pruning side by side: magnitude, Wanda and SparseGPT at 50 % and 2:4 (and
Wanda uniform vs OWL at 70 %) on one model, one calibration set, one perplexity harness.

Default model: Gemma-3 270M (`prunekit data fetch gemma3-270m`: the Q4_K_M GGUF dequantized,
so its perplexities are not the published ones; the figures to read are ratios to the dense
row of the same run). Text: the Python 3.11 docs (`prunekit data fetch python-docs`, PSF
licence): calibration windows from the HOWTOs and FAQ, perplexity on the Tutorial, disjoint
chapters. Each row runs in its own process (fresh model, its own peak RSS); rows record the
calibration and evaluation protocol, the time of the pruning call and a greedy generation.

    python benchmarks/llm_table.py [--model gemma3-270m|DIR] [--rows dense,magnitude@0.5,wanda@2:4,...]
        [--n 64] [--seq-len 512] [--eval-tokens 32768] [--threads 2] [--json FILE]
"""
import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time

DEFAULT_ROWS = ("dense", "magnitude@0.5", "wanda@0.5", "sparsegpt@0.5", "magnitude@2:4", "wanda@2:4",
                "sparsegpt@2:4", "magnitude@0.7", "wanda@0.7", "wanda@0.7+owl", "sparsegpt@0.7")
PROMPT = "The Python tutorial explains how to"


def parse_structured(spec):
    """"layers=4+ffn=0.2+recover" -> prune_structured's keywords."""
    kwargs = {}
    for part in spec.split("+"):
        key, _, value = part.partition("=")
        kwargs[key] = True if key == "recover" else int(value) if key == "layers" else float(value)
    return kwargs


def parse_row(spec):
    """"wanda@2:4" -> (method, sparsity, pattern, allocation)."""
    if spec == "dense":
        return "dense", 0.0, None, "uniform"
    if "=" in spec:
        return "structured", 0.0, None, "uniform"
    method, _, rest = spec.partition("@")
    rest, _, owl = rest.partition("+")
    pattern = rest if ":" in rest else None
    sparsity = (int(rest.split(":")[1]) - int(rest.split(":")[0])) / int(rest.split(":")[1]) if pattern else float(rest)
    return method, sparsity, pattern, "owl" if owl == "owl" else "uniform"


def model_folder(name):
    from prunekit.data import assets
    return assets.require(name) if name in assets.MODELS else name


def require_inputs(model):
    """Stop before any row when the text or the model is not there: every row would fail the same way."""
    from pathlib import Path

    from prunekit.data import assets
    from prunekit.errors import PruneError
    try:
        assets.require("python-docs")
        folder = model_folder(model)
    except PruneError as err:
        raise SystemExit(f"llm_table: {err}") from None
    if not Path(folder).exists():
        raise SystemExit(f"llm_table: no model at {folder}: give a Hugging Face folder, a .gguf file or one of "
                         f"{', '.join(assets.MODELS)} (fetched with prunekit data fetch NAME)")


def failure(stderr: str) -> str:
    """The last line of a failed row's stderr: the exception, with its message."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output (killed?)"


def prune_row(model, batches, spec, row):
    """Prune as the row says; the pruning call's time and what it reports go into the row."""
    from prunekit import llm
    method, sparsity, pattern, allocation = parse_row(spec)
    start = time.perf_counter()
    if method == "structured":
        report = llm.prune_structured(model, batches, **parse_structured(spec))
        row.update(structured=parse_structured(spec), params_before=report.params_before,
                   params_after=report.params_after, removed_layers=report.removed_layers,
                   heads_after=list(report.heads), ffn_after=report.ffn)
    elif method != "dense":
        row["achieved_sparsity"] = llm.prune(model, batches, method=method, sparsity=sparsity, pattern=pattern,
                                             allocation=allocation).sparsity
    row["seconds"] = time.perf_counter() - start if method != "dense" else 0.0


def _decode_speed(model, ids, tokens) -> float:
    start = time.perf_counter()
    model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return tokens / (time.perf_counter() - start)


def generation(model, tokenizer, row, dense=None, tokens=48, repeats=3):
    """A greedy sample, and decode speed: new tokens per second at batch 1 after a warm-up, the
    median of `repeats` timed generations. With `dense` (the model before a structured cut), the
    dense model is timed too, alternating with the pruned one in this process, so the speedup is
    a ratio measured side by side (the speed of one process alone drifts by 20 % between runs)."""
    import statistics

    import torch
    ids = tokenizer(PROMPT, return_tensors="pt")
    models = {"pruned": model, **({"dense": dense} if dense is not None else {})}
    speeds = {name: [] for name in models}
    with torch.no_grad():
        for m in models.values():
            m.generate(**ids, max_new_tokens=4, do_sample=False)
        for _ in range(repeats):
            for name, m in models.items():
                speeds[name].append(_decode_speed(m, ids, tokens))
        out = model.generate(**ids, max_new_tokens=tokens, do_sample=False)
    row["tokens_per_s"], row["tokens_per_s_runs"] = statistics.median(speeds["pruned"]), speeds["pruned"]
    if dense is not None:
        row["dense_tokens_per_s"] = statistics.median(speeds["dense"])
        row["speedup"] = row["tokens_per_s"] / row["dense_tokens_per_s"]
    row["sample"] = tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)


def run_row(args, spec):
    """One row, in this process: load, prune, time; perplexity and generation (causal LM) or
    embedding agreement with the dense model (encoder)."""
    import torch

    from prunekit import llm
    from prunekit.data import assets
    torch.set_num_threads(args.threads)
    texts = assets.require("python-docs")
    model, tokenizer = llm.load(model_folder(args.model))
    method, sparsity, pattern, allocation = parse_row(spec)
    row = {"model": args.model, "method": method, "pattern": pattern, "sparsity": sparsity, "allocation": allocation}
    evaluation = (texts / "tutorial.txt").read_text()
    causal = model.can_generate()
    if not causal:
        sentences = llm.sentences(evaluation, n=args.sentences)
        dense = llm.embed(model, tokenizer, sentences)
    batches = llm.calibration(tokenizer, (texts / "howto.txt").read_text(), n=args.n, seq_len=args.seq_len,
                              seed=args.seed)
    before = copy.deepcopy(model) if causal and method == "structured" else None
    prune_row(model, batches, spec, row)
    if causal:
        row.update(llm.perplexity(model, tokenizer, evaluation, seq_len=args.seq_len, max_tokens=args.eval_tokens))
        generation(model, tokenizer, row, dense=before)
    else:
        row.update(llm.agreement(dense, llm.embed(model, tokenizer, sentences)))
    row["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row["calibration"] = {"text": "python-docs howto.txt", "sequences": args.n, "seq_len": args.seq_len,
                          "seed": args.seed}
    row["evaluation"] = {"text": "python-docs tutorial.txt", "max_tokens": args.eval_tokens} if causal else \
        {"text": "python-docs tutorial.txt", "sentences": args.sentences}
    return row


def summary(row, first, spec) -> str:
    """One line per row: perplexity (and its ratio to the dense row) or embedding agreement."""
    timing = f"prune {row['seconds']:6.1f} s  peak {row['peak_rss'] / 2**30:.2f} GiB"
    if "perplexity" not in row:
        return (f"{spec:<24} cosine {row['cosine']:.4f} top-1 {row['retrieval_top1']:.3f} "
                f"in top-10 {row['retrieval_in_top10']:.3f}  {timing}")
    ratio = f"{row['perplexity'] / first['perplexity']:7.2f}x" if first["method"] == "dense" else ""
    speedup = f" ({row['speedup']:.2f}x dense)" if "speedup" in row else ""
    return (f"{spec:<24} ppl {row['perplexity']:9.2f} {ratio} {timing} {row['tokens_per_s']:6.1f} tok/s{speedup}"
            f" | {row['sample'][:50]!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS))
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=32768)
    parser.add_argument("--sentences", type=int, default=512, help="encoders: sentences embedded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # child mode: one row, JSON on stdout
    args = parser.parse_args()
    if args.row:
        print("ROW " + json.dumps(run_row(args, args.row)), flush=True)
        return
    require_inputs(args.model)
    rows, failed = [], []
    for spec in args.rows.split(","):
        child = ["--model", args.model, "--n", str(args.n), "--seq-len", str(args.seq_len), "--eval-tokens",
                 str(args.eval_tokens), "--seed", str(args.seed), "--threads", str(args.threads),
                 "--sentences", str(args.sentences)]
        proc = subprocess.run([sys.executable, __file__, *child, "--row", spec], capture_output=True, text=True, check=False,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")), None)
        if line is None:
            print(f"{spec}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr, flush=True)
            failed.append(f"{spec}: {failure(proc.stderr)}")
            continue
        rows.append(json.loads(line[4:]))
        print(summary(rows[-1], rows[0], spec), flush=True)
    if failed:  # a table missing rows is not this benchmark's table: no --json, and a non-zero exit
        raise SystemExit(f"llm_table: {len(failed)} of {len(failed) + len(rows)} rows failed"
                         f"{' (--json not written)' if args.json else ''}:\n" + "\n".join(failed))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
