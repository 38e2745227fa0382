"""What checking a compressed checkpoint costs at load: pk.load of the same files with every
check (plan fields, each form's invariants, shapes, modules) and with the checks switched off,
which is the load path as it was before them; interleaved rounds, the median of each, and
their ratio per file. Files: ResNet-18 (torchvision, 11.7M weights) pruned 90 % by magnitude,
and 2:4, each compressed and compressed with int8 values; and a 4096-wide MLP (50M weights)
pruned 90 %.

    python benchmarks/load_checks.py [--rounds 7] [--json FILE]
"""
import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from torch import nn

import prunekit as pk
from prunekit import zoo
from prunekit.serialization import codecs, io, read


@contextlib.contextmanager
def unchecked():
    """The load path without this issue's checks: each check function a no-op."""
    saved = codecs.check, read._check_shapes, io._check_modules, read.plans.check
    codecs.check = read._check_shapes = io._check_modules = lambda *a, **k: None
    read.plans.check = lambda plan, path: plan
    try:
        yield
    finally:
        codecs.check, read._check_shapes, io._check_modules, read.plans.check = saved


def files(tmp: Path) -> dict:
    """{name: (path, fresh-model builder)} of the compressed files timed."""
    def resnet():
        return zoo.build("torchvision:resnet18", num_classes=10)

    def mlp():
        return nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(3)])
    out = {}
    for name, build, prune in [("resnet18-90%", resnet, lambda m: pk.prune_magnitude(m, 0.9)),
                               ("resnet18-2:4", resnet, lambda m: pk.prune_nm(m, 2, 4)),
                               ("mlp4096-90%", mlp, lambda m: pk.prune_magnitude(m, 0.9))]:
        model = build()
        prune(model)
        for int8 in (False, True):
            label = name + ("-int8" if int8 else "")
            out[label] = (pk.save(model, tmp / f"{label}.safetensors", format="compressed", int8=int8), build)
    return out


def timed(path, build) -> float:
    model = build()  # not timed: the same for both paths
    started = time.perf_counter()
    pk.load(path, model=model)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (path, build) in files(Path(tmp)).items():
            checked, plain = [], []
            for _ in range(args.rounds):  # interleaved: drift in the machine hits both alike
                checked.append(timed(path, build))
                with unchecked():
                    plain.append(timed(path, build))
            row = {"file": label, "bytes": path.stat().st_size, "checked_s": statistics.median(checked),
                   "unchecked_s": statistics.median(plain)}
            row["ratio"] = row["checked_s"] / row["unchecked_s"]
            rows.append(row)
            print(f"{label:<20} {row['bytes'] / 2**20:7.1f} MiB  checked {row['checked_s'] * 1e3:7.1f} ms  "
                  f"unchecked {row['unchecked_s'] * 1e3:7.1f} ms  ratio {row['ratio']:.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": args.rounds, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
