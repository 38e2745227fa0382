"""prunekit evaluate: test accuracy, counts, MACs and latency of a model."""
from prunekit.cli._args import (
    MODEL_HELP,
    add_dataset,
    add_weights,
    check_outputs,
    load_dataset,
    load_model,
    positive_int,
    write_json,
)


def add(add_parser, common):
    p = add_parser("evaluate", parents=[common], help="accuracy, counts, MACs, latency of a model")
    p.add_argument("input", help=MODEL_HELP)
    add_weights(p)
    add_dataset(p)
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--json")
    p.set_defaults(func=run)


def run(args):
    from prunekit.measure import measure
    from prunekit.train.loop import evaluate
    check_outputs(files=[args.json])
    dataset = load_dataset(args)
    model = load_model(args.input, args, dataset)
    metrics = measure(model, dataset.test.x[:args.batch])
    metrics["accuracy"] = evaluate(model, dataset.test)
    if args.json:
        write_json(args.json, metrics)
    for key in ("accuracy", "params", "nonzeros", "sparsity", "macs", "effective_macs", "peak_memory"):
        print(f"{key:>15}: {metrics.get(key)}")
    print(f"{'latency':>15}: {1e3 * metrics['latency']['median_s']:.3f} ms (batch {args.batch})")
