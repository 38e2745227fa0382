"""Larger than memory: llm.prune_sharded on a Llama-style model whose fp32 weights exceed an RSS
cap, side by side with llm.prune on the whole model in memory, each in its own process.

The model is built from a config (random weights, seeded) and written straight to safetensors
shards, one tensor at a time, so that writing it never needs it whole either. Both paths prune
with Wanda at 50 % on the same random token calibration; the peak resident memory of each
process (getrusage) is reported against the cap and the size of the weights, and the two
outputs are compared tensor by tensor (the streamed path claims to be llm.prune, block by block).

    python benchmarks/llm_stream.py [--hidden 2048] [--layers 24] [--cap 2] [--json FILE]
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARD_BYTES = 512 * 2**20


def config(args):
    import transformers as T
    return T.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, max_position_embeddings=2048, tie_word_embeddings=False)


def write_random(cfg, folder: Path, dtype=None, shard_bytes: int = SHARD_BYTES) -> int:
    """Write a random Llama model of config `cfg` as shards without building it (shapes from a
    meta-device model, one tensor at a time, in `dtype`); the weights' size in bytes."""
    import torch
    import transformers as T
    from safetensors.torch import save_file
    dtype = dtype or torch.float32
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in T.LlamaForCausalLM(cfg).state_dict().items()}
    generator, shard, weight_map, total, files = torch.Generator().manual_seed(0), {}, {}, 0, []

    def flush():
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shard, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        files.append(name)
        shard.clear()
    for key, shape in shapes.items():
        shard[key] = torch.ones(shape, dtype=dtype) if len(shape) == 1 else \
            (0.02 * torch.randn(shape, generator=generator)).to(dtype)
        total += shard[key].numel() * shard[key].element_size()
        if sum(t.numel() * t.element_size() for t in shard.values()) >= shard_bytes:
            flush()
    if shard:
        flush()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    cfg.save_pretrained(folder)
    return total


def make(args, folder: Path) -> int:
    return write_random(config(args), folder)


def prune(args, folder: Path, out: Path, streamed: bool) -> dict:
    """One path, in this process: its pruning time and this process's peak RSS."""
    import torch
    from prunekit import llm
    torch.set_num_threads(args.threads)
    batches = torch.randint(0, args.vocab, (args.n, args.seq_len), generator=torch.Generator().manual_seed(1))
    started = time.perf_counter()
    if streamed:
        report = llm.prune_sharded(folder, out, batches, method="wanda", sparsity=0.5)
    else:
        import transformers as T
        model = T.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        report = llm.prune(model, batches, method="wanda", sparsity=0.5)
        model.save_pretrained(out)
    return {"path": "prune_sharded" if streamed else "prune", "seconds": time.perf_counter() - started,
            "sparsity": report.sparsity, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def same_weights(a: Path, b: Path) -> dict:
    """Largest absolute difference between the two outputs' tensors, and how many were compared."""
    from prunekit.llm.sharded import Shards
    left, right = Shards(a), Shards(b)
    worst = 0.0
    for name in left.where:
        x, y = left.read([name])[name], right.read([name])[name]
        worst = max(worst, float((x.float() - y.float()).abs().max()))
    return {"tensors": len(left.where), "max_abs_diff": worst, "same_names": set(left.where) == set(right.where)}


def child(args, step, *paths):
    done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--step", step, *map(str, paths)],
                          capture_output=True, text=True)
    if done.returncode or not done.stdout.strip():  # its stderr says why; a bare CalledProcessError would not
        raise SystemExit(f"llm_stream: step {step} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("hidden", 2048), ("layers", 24), ("intermediate", 5632), ("vocab", 32000),
                          ("heads", 16), ("kv-heads", 4), ("n", 8), ("seq-len", 256), ("threads", 2)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--cap", type=float, default=2.0, help="RSS cap in GiB the streamed path must stay under")
    parser.add_argument("--json")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.step == "make":
        print(json.dumps({"weights_bytes": make(args, Path(rest[0]))}))
        return
    if args.step in ("stream", "memory"):
        print(json.dumps(prune(args, Path(rest[0]), Path(rest[1]), args.step == "stream")))
        return
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        tmp = Path(tmp)
        (tmp / "model").mkdir()
        weights = child(args, "make", tmp / "model")["weights_bytes"]
        rows = [child(args, "stream", tmp / "model", tmp / "streamed"), child(args, "memory", tmp / "model", tmp / "whole")]
        result = {"model": {k: getattr(args, k) for k in ("hidden", "layers", "intermediate", "vocab", "heads",
                                                           "kv_heads")},
                  "weights_bytes": weights, "cap_bytes": int(args.cap * 2**30),
                  "calibration": {"sequences": args.n, "seq_len": args.seq_len, "tokens": "random, seed 1"},
                  "threads": args.threads, "rows": rows, "agreement": same_weights(tmp / "streamed", tmp / "whole")}
    gib = 2**30
    print(f"Llama-style, fp32 weights {weights / gib:.2f} GiB, cap {args.cap:.2f} GiB")
    for row in rows:
        print(f"  {row['path']:<14} peak RSS {row['peak_rss'] / gib:5.2f} GiB  "
              f"({'under' if row['peak_rss'] < result['cap_bytes'] else 'OVER'} the cap)  "
              f"{row['seconds']:6.1f} s  sparsity {row['sparsity']:.3f}")
    print(f"  outputs: {result['agreement']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
