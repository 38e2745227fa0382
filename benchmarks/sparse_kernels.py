"""Sparse kernels on this CPU: pk.to_sparse against dense PyTorch, side by side in one process.

Parts (each a list of rows in the JSON):
- mlp: the MLP 4096-4096-4096-4096 (three 4096x4096 layers), magnitude-pruned per layer to
  80/90/95 %, at batch 1 and 32: dense, torch's CSR on every layer (the floor the issue names),
  and pk.to_sparse (the kernel chosen per layer); outputs compared; the memory-traffic bound
  (dense bytes / bytes of the chosen form). Timed interleaved (each model starts with the
  caches holding the previous one's data) and also each model alone, back to back.
- crossover: one 4096x4096 layer, sparsity 50-98 % x batch 1/8/32/128: the kernel to_sparse
  chooses and its speedup over dense, measured again after the choice.
- bert: the BERT-base layer shapes at 90 %, one token and 128 tokens.
- nm: 2:4 on a 4096x4096 layer at batch 1 and 8: the packed N:M kernel, forced, and the choice.
- size: a 90 % model's compressed checkpoint against the dense file, with and without int8 values.

- conv (with --parts conv): single Conv2d layers of ResNet-50 shapes at 90-97 %, batch 1.

    python benchmarks/sparse_kernels.py [--threads 2] [--repeats 30] [--parts mlp,...,conv] [--json FILE] [--quick]
"""
import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import prunekit as pk
from prunekit.deploy import apply_kernels, formats, plan_kernels
from prunekit.deploy.sparse_linear import SparseLinear
from prunekit.measure.latency import time_models


def mlp(width=4096, layers=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)]).eval()


def pruned(model, sparsity):
    model = copy.deepcopy(model)
    pk.prune_magnitude(model, sparsity, scope="layer")
    return pk.make_permanent(model)


def bound(model) -> float:
    """Dense fp32 weight bytes over the bytes the chosen forms read (weights only)."""
    dense = sparse = 0
    for module in model.modules():
        if isinstance(module, SparseLinear):
            dense += module.in_features * module.out_features * 4
            sparse += formats.nbytes(module.parts())
        elif isinstance(module, nn.Linear):
            dense += module.weight.numel() * 4
            sparse += module.weight.numel() * 4
    return dense / sparse


def kernels_of(model) -> list:
    return [m.kernel if isinstance(m, SparseLinear) else "dense" for m in model.modules()
            if isinstance(m, (SparseLinear, nn.Linear))]


def timed(models: dict, x, args) -> dict:
    times = time_models(models, x, repeats=args.repeats, warmup=3, threads=args.threads)
    return {name: {k: t[k] for k in ("median_s", "p25_s", "p75_s")} for name, t in times.items()}


def speedup_alone(dense, sparse, x, args, blocks=6) -> dict:
    """Dense over sparse, each model run back to back on its own (what a server running only
    this model sees: its weights stay in cache if they fit). The two take turns in `blocks`
    blocks; each pair of neighbouring blocks gives one ratio, and the median of those ratios is
    the speedup, so the machine's speed drifting between blocks cancels out of each ratio."""
    ratios = []
    for _ in range(blocks):
        times = {}
        for name, model in (("dense", dense), ("sparse", sparse)):
            t = time_models({name: model}, x, repeats=max(1, args.repeats // blocks), warmup=3, threads=args.threads)
            times[name] = t[name]["median_s"]
        ratios.append(times["dense"] / times["sparse"])
    return {"speedup": statistics.median(ratios), "block_ratios": ratios}


def max_diff(a, b, x) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def mlp_rows(args):
    rows, base = [], mlp()
    for sparsity in args.mlp_sparsities:
        model = pruned(base, sparsity)
        for batch in (1, 32):
            x = torch.randn(batch, 4096)
            floor = apply_kernels(copy.deepcopy(model), {"0": "torch-csr", "1": "torch-csr", "2": "torch-csr"})
            chosen = pk.to_sparse(copy.deepcopy(model), x)
            t = timed({"dense": model, "torch-csr": floor, "to_sparse": chosen}, x, args)
            alone = speedup_alone(model, chosen, x, args)
            rows.append({"sparsity": sparsity, "batch": batch, "kernels": kernels_of(chosen), "times": t,
                         "speedup": t["dense"]["median_s"] / t["to_sparse"]["median_s"],
                         "speedup_alone": alone["speedup"], "alone_block_ratios": alone["block_ratios"],
                         "speedup_torch_csr": t["dense"]["median_s"] / t["torch-csr"]["median_s"],
                         "bound": bound(chosen), "max_abs_diff": max_diff(model, chosen, x)})
            print(f"mlp {sparsity:.0%} batch {batch}: to_sparse {rows[-1]['speedup']:.2f}x "
                  f"({','.join(rows[-1]['kernels'])}), alone {rows[-1]['speedup_alone']:.2f}x, torch-csr {rows[-1]['speedup_torch_csr']:.2f}x, "
                  f"bound {rows[-1]['bound']:.2f}x", flush=True)
    return rows


def layer_cell(weight_model, batch, args, kernels=None):
    """One layer: the chosen kernel, and chosen vs dense timed again side by side."""
    x = torch.randn(batch, weight_model[0].in_features)
    plan = plan_kernels(weight_model, x, kernels=kernels)
    chosen = apply_kernels(copy.deepcopy(weight_model), {n: row["kernel"] for n, row in plan.items()})
    t = timed({"dense": weight_model, "chosen": chosen}, x, args)
    return {"batch": batch, "kernel": plan["0"]["kernel"], "choice_seconds": plan["0"]["seconds"],
            "speedup": t["dense"]["median_s"] / t["chosen"]["median_s"], "times": t,
            "max_abs_diff": max_diff(weight_model, chosen, x)}


def crossover_rows(args):
    rows, base = [], mlp(layers=1)
    for sparsity in args.cross_sparsities:
        model = pruned(base, sparsity)
        for batch in args.cross_batches:
            rows.append({"sparsity": sparsity, **layer_cell(model, batch, args)})
            print(f"crossover {sparsity:.0%} batch {batch}: {rows[-1]['kernel']} {rows[-1]['speedup']:.2f}x",
                  flush=True)
    return rows


def bert_rows(args):
    rows = []
    for out, inp in ((768, 768), (3072, 768), (768, 3072)):
        torch.manual_seed(0)
        model = pruned(nn.Sequential(nn.Linear(inp, out)).eval(), 0.9)
        for tokens in (1, 128):
            rows.append({"shape": [out, inp], **layer_cell(model, tokens, args)})
            print(f"bert {inp}->{out} tokens {tokens}: {rows[-1]['kernel']} {rows[-1]['speedup']:.2f}x", flush=True)
    return rows


def nm_rows(args):
    rows, base = [], mlp(layers=1)
    model = copy.deepcopy(base)
    pk.prune_nm(model, 2, 4)
    pk.make_permanent(model)
    for batch in (1, 8):
        forced = layer_cell(model, batch, args, kernels=["dense", "nm"])
        chosen = layer_cell(model, batch, args)
        rows.append({"pattern": "2:4", "batch": batch, "nm_forced": forced, "chosen": chosen})
        print(f"2:4 batch {batch}: nm {forced['speedup']:.2f}x, chosen {chosen['kernel']} {chosen['speedup']:.2f}x",
              flush=True)
    return rows


CONVS = ((512, 512, 1, 14, 0.9), (256, 256, 3, 14, 0.9), (256, 256, 3, 14, 0.97), (64, 64, 3, 56, 0.9))


def conv_rows(args):
    """Single Conv2d layers (ResNet-50 shapes), batch 1: the kernel chosen against F.conv2d."""
    rows = []
    for cin, cout, k, hw, sparsity in CONVS:
        torch.manual_seed(0)
        model = pruned(nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2)).eval(), sparsity)
        x = torch.randn(1, cin, hw, hw)
        plan = plan_kernels(model, x)
        chosen = apply_kernels(copy.deepcopy(model), {n: row["kernel"] for n, row in plan.items()})
        t = timed({"dense": model, "chosen": chosen}, x, args)
        rows.append({"shape": [cout, cin, k, k], "input": [1, cin, hw, hw], "sparsity": sparsity,
                     "kernel": plan["0"]["kernel"], "choice_seconds": plan["0"]["seconds"],
                     "speedup": t["dense"]["median_s"] / t["chosen"]["median_s"], "times": t,
                     "max_abs_diff": max_diff(model, chosen, x)})
        print(f"conv {cin}->{cout} {k}x{k} on {hw}x{hw} at {sparsity:.0%}: {rows[-1]['kernel']} "
              f"{rows[-1]['speedup']:.2f}x", flush=True)
    return rows


def size_rows():
    model = pruned(mlp(layers=1), 0.9)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {name: pk.save(model, Path(tmp) / f"{name}.safetensors", **kw).stat().st_size
                 for name, kw in (("dense", {}), ("compressed", {"format": "compressed"}),
                                  ("compressed_int8", {"format": "compressed", "int8": True}))}
    print(f"size at 90 %: compressed {sizes['compressed'] / sizes['dense']:.3f}x, "
          f"int8 {sizes['compressed_int8'] / sizes['dense']:.3f}x of dense", flush=True)
    return [{"sparsity": 0.9, "bytes": sizes, "compressed_ratio": sizes["compressed"] / sizes["dense"],
             "int8_ratio": sizes["compressed_int8"] / sizes["dense"]}]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="fewer cells, for a smoke run")
    parser.add_argument("--parts", default="mlp,crossover,bert,nm,size", help="which parts (also: conv)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.mlp_sparsities = (0.9,) if args.quick else (0.8, 0.9, 0.95)
    args.cross_sparsities = (0.5, 0.9) if args.quick else (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
    args.cross_batches = (1, 32) if args.quick else (1, 8, 32, 128)
    started = time.perf_counter()
    parts = {"mlp": mlp_rows, "crossover": crossover_rows, "bert": bert_rows, "nm": nm_rows,
             "size": lambda _: size_rows(), "conv": conv_rows}
    result = {"machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                          "cpu": platform.processor() or platform.machine(), "threads": args.threads},
              "repeats": args.repeats}
    result.update({name: parts[name](args) for name in args.parts.split(",")})
    result["seconds"] = time.perf_counter() - started
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
