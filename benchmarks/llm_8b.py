"""An 8B model on this machine: `prunekit llm prune --stream` on a Llama-3-8B-shaped model (hidden
4096, 32 blocks, FFN 14336, 32 query heads on 8 key/value heads, vocab 128256, untied LM head)
stored as bf16 safetensors shards (about 16 GB), with Wanda and SparseGPT at 50 % and 2:4.

The model is built from its config with random weights (seeded), tensor by tensor, and written
once under $PRUNEKIT_HOME/models/llama3-8b-shape-bf16 (a later run reuses it); quality is not
the point here (random weights), memory, time and dtype are. Its tokenizer is a byte-level BPE
trained on the calibration text's own chapters (ids well inside the vocabulary). Each row runs
the CLI in its own process: peak RSS (getrusage) and wall time per row, against the size of the
whole model; a last process reads the output with from_pretrained and runs a forward.

    python benchmarks/llm_8b.py [--rows wanda,sparsegpt,wanda@2:4,sparsegpt@2:4] [--n 16]
                                [--seq-len 512] [--threads 2] [--json FILE]
"""
import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHAPE = {"vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336,
         "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
         "tie_word_embeddings": False, "rope_theta": 500000.0}
SHARD_BYTES = 2 * 2**30
GIB = 2**30


def model_folder() -> Path:
    from prunekit._utils.paths import home
    return home() / "models" / "llama3-8b-shape-bf16"


def _tokenizer(folder: Path) -> None:
    """A byte-level BPE of 8192 tokens trained on the calibration chapters, with a BOS token."""
    import transformers as T
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from prunekit.data import assets
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=8192, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<pad>", "<s>"], show_progress=False)
    bpe.train_from_iterator([(assets.require("python-docs") / "howto.txt").read_text()], trainer)
    T.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>").save_pretrained(folder)


def make(folder: Path) -> int:
    """Write the random bf16 model shard by shard (never whole in memory); its size in bytes."""
    import torch
    import transformers as T

    from llm_stream import write_random
    total = write_random(T.LlamaConfig(**SHAPE, dtype="bfloat16"), folder, torch.bfloat16, SHARD_BYTES)
    _tokenizer(folder)
    return total


def ensure_model() -> Path:
    folder = model_folder()
    if not (folder / "model.safetensors.index.json").is_file():
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        started = time.perf_counter()
        make(tmp)
        tmp.rename(folder)
        print(f"wrote {folder} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def prune_row(args, row: str, out: Path) -> dict:
    """One row, in this process: the CLI's figures, its wall time and this process's peak RSS."""
    from prunekit import cli
    method, _, pattern = row.partition("@")
    figures = out.with_suffix(".json")
    flags = ["--pattern", pattern] if pattern else ["--sparsity", "0.5"]
    started = time.perf_counter()
    cli.main(["llm", "prune", "--model", str(model_folder()), "--stream", "--method", method, *flags,
              "--n", str(args.n), "--seq-len", str(args.seq_len), "--out", str(out), "--json", str(figures),
              "--quiet"])
    report = json.loads(figures.read_text())["unstructured"]
    return {"row": row, "seconds": time.perf_counter() - started, "sparsity": report["sparsity"],
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "block_seconds": [b["seconds"] for b in report["blocks"]]}


def first_blocks(args, row: str, count: int) -> dict:
    """A time bound where a whole row does not fit a session: the streamed path's own steps
    (shell, recorded calls, then `count` blocks read, pruned and dropped, nothing written), each
    block timed; the whole row is bounded by the set-up plus 32 times the slowest block."""
    from prunekit import llm
    from prunekit.data import assets
    from prunekit.llm import sharded
    from prunekit.llm.prune import LLMPruneReport, parse_pattern
    method, _, pattern = row.partition("@")
    folder = model_folder()
    started = time.perf_counter()
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(folder)
    batches = llm.calibration(tokenizer, (assets.require("python-docs") / "howto.txt").read_text(), n=args.n,
                              seq_len=args.seq_len, seed=0)
    shards = sharded.Shards(folder)
    model, name, block_class, config, _ = sharded._shell(folder, sharded._common_float(shards.dtypes()))
    calls, inputs = sharded._record(model, name, block_class, config, batches)
    setup = time.perf_counter() - started
    nm = parse_pattern(pattern or None)
    report = LLMPruneReport(method, pattern or None, "uniform", 0.0)
    target = 0.5 if nm is None else (nm[1] - nm[0]) / nm[1]
    for index in range(count):
        block = sharded._load_block(model, block_class, config, index, name, shards)
        inputs = sharded._prune_block(block, calls[index], inputs, target, nm, None, report)
        del block
    seconds = [b["seconds"] for b in report.blocks]
    return {"row": row, "blocks_timed": count, "setup_seconds": setup, "block_seconds": seconds,
            "bound_seconds": setup + len(calls) * max(seconds), "sparsity": report.blocks[-1]["sparsity"],
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def load_check(out: Path) -> dict:
    """from_pretrained reads the output (bf16); one forward; the zeros of block 0's MLP."""
    import torch
    import transformers as T
    started = time.perf_counter()
    model = T.AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.arange(8).unsqueeze(0)).logits
    up = model.model.layers[0].mlp.up_proj.weight
    return {"loads": True, "dtype": str(up.dtype), "finite": bool(torch.isfinite(logits).all()),
            "block0_up_zeros": float((up == 0).float().mean()), "seconds": time.perf_counter() - started,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def child(step, *extra):
    done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--step", step, *map(str, extra)],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"step {step} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="wanda,sparsegpt,wanda@2:4,sparsegpt@2:4")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bound-blocks", type=int, default=0,
                        help="time only this many blocks per row and bound the whole row (no output written)")
    parser.add_argument("--note", default="", help="what else the machine ran meanwhile (kept in the JSON)")
    parser.add_argument("--json")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    import torch
    torch.set_num_threads(args.threads)
    if args.step == "prune":
        print(json.dumps(prune_row(args, rest[0], Path(rest[1]))))
        return
    if args.step == "blocks":
        print(json.dumps(first_blocks(args, rest[0], int(rest[1]))))
        return
    if args.step == "load":
        print(json.dumps(load_check(Path(rest[0]))))
        return
    folder = ensure_model()
    size = json.loads((folder / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    rows = []
    for row in args.rows.split(","):
        if args.bound_blocks:
            rows.append(child("blocks", row, args.bound_blocks))
            print(f"{row:<14} {args.bound_blocks} blocks: {rows[-1]['block_seconds']} s; the whole row is bounded by "
                  f"{rows[-1]['bound_seconds'] / 60:.1f} min; peak RSS {rows[-1]['peak_rss'] / GIB:.2f} GiB", flush=True)
            continue
        out = folder.with_name(f"{folder.name}-pruned")
        shutil.rmtree(out, ignore_errors=True)
        result = child("prune", row, out)
        result["load"] = child("load", out)
        rows.append(result)
        print(f"{row:<14} {result['seconds'] / 60:6.1f} min  peak RSS {result['peak_rss'] / GIB:5.2f} GiB "
              f"({result['peak_rss'] / size:.2f} of the model's {size / GIB:.1f} GiB)  sparsity "
              f"{result['sparsity']:.3f}  reloads: {result['load']['loads']}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": SHAPE, "dtype": "bfloat16", "weights_bytes": size,
                                               "calibration": {"text": "python-docs howto.txt", "sequences": args.n,
                                                               "seq_len": args.seq_len},
                                               "threads": args.threads, "note": args.note, "rows": rows},
                                              indent=1))


if __name__ == "__main__":
    main()
