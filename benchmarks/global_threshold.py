"""Global magnitude threshold at scale: prunekit vs torch.nn.utils.prune vs torch.quantile.

Each (size, method) runs in a fresh subprocess on a synthetic stack of bias-free Linear
layers; we record the wall time of the pruning call and its peak extra resident memory
(VmHWM after the call, reset just before it, minus VmRSS before it). Usage:

    python benchmarks/global_threshold.py [--sizes 10M,100M,1B] [--json out.json]
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SPARSITY = 0.9
METHODS = ("prunekit", "torch_global_unstructured", "torch_quantile")


def _status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _model(numel, torch):
    width = 4096 if numel >= 10**9 else 2048 if numel >= 10**8 else 1024
    layers = max(1, round(numel / width**2))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model:
            layer.weight.normal_(generator=generator)
    return model, layers * width * width


def _run_prunekit(model, torch):
    pk = sys.modules["prunekit"]
    pk.prune_magnitude(model, SPARSITY, scope="global")


def _run_torch_global(model, torch):
    import torch.nn.utils.prune as prune
    params = [(m, "weight") for m in model]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=SPARSITY)


def _run_quantile(model, torch):
    scores = torch.cat([m.weight.detach().abs().reshape(-1) for m in model])
    threshold = torch.quantile(scores, SPARSITY)
    for m in model:
        m.weight.data.mul_(m.weight.abs() > threshold)


def child(method, numel):
    import torch
    import torch.nn.utils.prune  # noqa: F401  (imports stay outside the timed region)

    import prunekit  # noqa: F401
    torch.set_num_threads(2)
    model, actual = _model(numel, torch)
    run = {"prunekit": _run_prunekit, "torch_global_unstructured": _run_torch_global,
           "torch_quantile": _run_quantile}[method]
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    start = time.perf_counter()
    try:
        run(model, torch)
        error = None
    except Exception as err:  # torch.quantile refuses big inputs: that is a result, not a crash
        error = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    seconds = time.perf_counter() - start
    zeros = sum(int((m.weight == 0).sum()) for m in model) if error is None else None
    print(json.dumps({"method": method, "weights": actual, "seconds": seconds,
                      "extra_peak_bytes": _status("VmHWM") - before, "zeros": zeros, "error": error}))


def _parse_size(text):
    units = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def _skip(method, numel):
    """The run left out on a 24 GiB machine: torch's pruner needs about 50 bytes per weight
    beside the model (5 GB measured at 100M), so about 50 GB at 1B."""
    if numel >= 10**9 and method == "torch_global_unstructured":
        return "not run: about 50 GB beside the model (5 GB measured at 100M)"
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10M,100M,1B")
    parser.add_argument("--json")
    args = parser.parse_args()
    results = []
    for size in args.sizes.split(","):
        numel = _parse_size(size)
        for method in METHODS:
            reason = _skip(method, numel)
            if reason:
                results.append({"method": method, "weights": numel, "error": reason})
                continue
            out = subprocess.run([sys.executable, __file__, "--child", method, str(numel)],
                                 capture_output=True, text=True)
            if out.returncode:  # a crash, not a refused call (those are recorded as the row's error)
                raise SystemExit(f"global_threshold: {method} at {size} failed (exit {out.returncode}):\n"
                                 f"{out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(_line(results[-1]), flush=True)
    _summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def _line(r):
    if r.get("seconds") is None:
        return f"{r['method']:>28} {r['weights']:>14,} {r['error']}"
    tail = f"  ({r['error']})" if r["error"] else f"  zeros={r['zeros']:,}"
    return (f"{r['method']:>28} {r['weights']:>14,} {r['seconds']:8.2f} s "
            f"{r['extra_peak_bytes'] / 2**20:9.0f} MiB extra{tail}")


def _summary(results):
    by = {(r["method"], r["weights"]): r for r in results}
    for weights in sorted({r["weights"] for r in results}):
        ours, theirs = by.get(("prunekit", weights)), by.get(("torch_global_unstructured", weights))
        if ours and theirs and theirs.get("seconds") and not theirs["error"]:
            print(f"{weights:,} weights: prunekit {theirs['seconds'] / ours['seconds']:.1f}x faster, "
                  f"{ours['extra_peak_bytes'] / max(theirs['extra_peak_bytes'], 1):.2f} of the extra memory "
                  f"of global_unstructured")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
