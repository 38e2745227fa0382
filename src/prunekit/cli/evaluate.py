"""prunekit evaluate: test accuracy, counts, MACs and latency of a saved model."""
from prunekit.cli._args import add_dataset, load_dataset, positive_int, write_json


def add(add_parser, common):
    p = add_parser("evaluate", parents=[common], help="accuracy, counts, MACs, latency of a saved model")
    p.add_argument("input")
    add_dataset(p)
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--json")
    p.set_defaults(func=run)


def run(args):
    from prunekit import serialization
    from prunekit.measure import measure
    from prunekit.train.loop import evaluate
    model = serialization.load(args.input)
    dataset = load_dataset(args)
    metrics = measure(model, dataset.test.x[:args.batch])
    metrics["accuracy"] = evaluate(model, dataset.test)
    if args.json:
        write_json(args.json, metrics)
    for key in ("accuracy", "params", "nonzeros", "sparsity", "macs", "effective_macs", "peak_memory"):
        print(f"{key:>15}: {metrics.get(key)}")
    print(f"{'latency':>15}: {1e3 * metrics['latency']['median_s']:.3f} ms (batch {args.batch})")
