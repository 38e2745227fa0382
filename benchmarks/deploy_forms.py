"""Every deployable form of one trained, pruned model, side by side: test accuracy, file size
and latency of dense and 90 %-pruned LeNet-300-100 on MNIST, each as fp32 eager, on sparse
kernels (pk.to_sparse), in ONNX Runtime and as dynamic int8; so int8's effect is seen apart
from sparsity's. Latency comes from deploy.bench (one interleaved loop per batch and thread
count); accuracy on the 10k test images; sizes are the files pk.save / export_onnx write.

    python benchmarks/deploy_forms.py [--epochs 4] [--sparsity 0.9] [--json FILE]
"""
import argparse
import copy
import json
import tempfile
from pathlib import Path

import torch

import prunekit as pk
from prunekit import data, zoo
from prunekit.deploy.bench import bench
from prunekit.deploy.int8 import quantize_int8
from prunekit.deploy.onnx import OnnxModule, export_onnx
from prunekit.train.loop import FitConfig, evaluate, fit


def accuracies(dense, pruned, test, tmp) -> dict:
    forms = {"dense": dense, "pruned": pruned, "sparse": pk.to_sparse(copy.deepcopy(pruned), test.x[:1]),
             "int8": quantize_int8(pruned), "dense-int8": quantize_int8(dense)}
    export_onnx(pruned, test.x[:1], tmp / "pruned.onnx")
    forms["onnx"] = OnnxModule(tmp / "pruned.onnx")
    with torch.no_grad():
        return {name: evaluate(model, test) for name, model in forms.items()}


def sizes(dense, pruned, tmp) -> dict:
    files = {"dense": pk.save(dense, tmp / "d.safetensors"),
             "pruned-compressed": pk.save(pruned, tmp / "c.safetensors", format="compressed"),
             "pruned-compressed-int8": pk.save(pruned, tmp / "q.safetensors", format="compressed", int8=True),
             "pruned-onnx": tmp / "pruned.onnx"}
    return {name: path.stat().st_size for name, path in files.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    mnist = data.load("mnist")
    torch.manual_seed(0)
    dense = zoo.build("lenet300")
    fit(dense, mnist, FitConfig(epochs=args.epochs, seed=0), quiet=True)
    pruned = copy.deepcopy(dense)
    pk.prune_magnitude(pruned, args.sparsity, scope="layer")
    fit(pruned, mnist, FitConfig(epochs=1, seed=0, lr=0.01), quiet=True)
    pk.make_permanent(pruned)
    dense.eval(), pruned.eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        acc = accuracies(dense, pruned, mnist.test, tmp)
        size = sizes(dense, pruned, tmp)
    rows = bench(pruned, (1, 28, 28), baseline=dense, batches=(1, 64), threads=(1, 2), repeats=args.repeats)
    for form, a in acc.items():
        print(f"{form:<11} test accuracy {100 * a:.2f} %")
    for name, b in size.items():
        print(f"{name:<24} {b:>10,} bytes  {b / size['dense']:.3f}x")
    for r in rows:
        print(f"{r['form']:<11} threads {r['threads']} batch {r['batch']:>3}: {1e3 * r['latency']['median_s']:.3f} ms "
              f"({r['speedup']:.2f}x dense)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": "lenet300", "dataset": "mnist", "epochs": args.epochs,
                                         "sparsity": args.sparsity, "accuracy": acc, "bytes": size, "bench": rows},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()
