"""prunekit search: per-layer sparsities (or channel ratios) that meet a cost target, or the
cheapest model that keeps an accuracy floor; decisions read the validation split only."""
from prunekit.cli._args import (
    add_dataset,
    check_outputs,
    cut,
    fraction,
    load_dataset,
    outputs,
    positive_int,
    write_json,
)
from prunekit.errors import PruneError


def add(add_parser, common):
    p = add_parser("search", parents=[common], help="per-layer ratios that meet a target (or an accuracy floor)")
    p.add_argument("input"), p.add_argument("output")
    add_dataset(p)
    p.add_argument("--cost", default="params", choices=["params", "macs", "latency"],
                   help="what the target counts; latency is timed on this machine (needs --structured)")
    p.add_argument("--target", type=cut, help="fraction of the cost to remove, e.g. 0.5")
    p.add_argument("--floor", type=fraction, help="instead: the cheapest model keeping this validation "
                                              "accuracy retention, e.g. 0.99")
    p.add_argument("--structured", action="store_true", help="remove channels instead of masking weights")
    p.add_argument("--round-to", type=positive_int, default=1, help="structured: keep channel counts multiples of this")
    p.add_argument("--batch", type=positive_int, default=64, help="example batch for MACs and latency")
    p.add_argument("--threads", type=positive_int, default=1, help="threads for latency timing")
    p.add_argument("--joint", action="store_true", help="structured --target: score each step on top of the "
                                                         "cuts so far (NetAdapt's greedy; slower, sees interactions)")
    p.add_argument("--format", default="compressed", choices=["dense", "compressed"])
    p.add_argument("--json")
    p.set_defaults(func=run)


def run(args):
    from prunekit import serialization
    from prunekit.train.loop import evaluate
    if (args.target is None) == (args.floor is None):
        raise PruneError("give exactly one of --target (fraction of the cost to remove) or --floor "
                         "(validation accuracy retention to keep)")
    check_outputs(files=[args.output, args.json])
    model = serialization.load(args.input)
    dataset = load_dataset(args)
    on_val = lambda m: evaluate(m, dataset.val)  # noqa: E731 - decisions read the validation split only
    dense = on_val(model)
    search = _channels if args.structured else _weights
    allocation, cost, metric = search(model, on_val, dataset.val.x[:args.batch], args)
    what = "channels removed" if args.structured else "sparsity"
    for name, value in allocation.items():
        print(f"{name:<24}{what} {value:.3f}")
    print(f"{cost}; validation accuracy {100 * dense:.2f} % -> {100 * metric:.2f} % (before fine-tuning)")
    with outputs(args.output, args.json) as (output, json_path):  # both or neither
        serialization.save(model, output, format=args.format)
        if json_path:
            write_json(json_path, {"allocation": allocation, "cost": args.cost, "summary": cost,
                                   "dense_val_accuracy": dense, "val_accuracy": metric})
    print(f"wrote {args.output}")


def _weights(model, on_val, x, args):
    from prunekit.measure.macs import layer_stats
    from prunekit.search import layerwise
    if args.joint:
        raise PruneError("--joint is a channel search: add --structured")
    if args.cost == "latency":
        raise PruneError("--cost latency needs --structured: masked weights do not make dense kernels faster")
    if args.floor is not None:
        if args.cost != "params":
            raise PruneError("--floor without --structured finds the sparsest model by weights: use --cost params")
        found = layerwise.search_floor(model, on_val, args.floor)
    else:
        sizes = {s["name"]: s["macs"] for s in layer_stats(model, (x,))} if args.cost == "macs" else None
        found = layerwise.search(model, on_val, args.target, sizes=sizes)
    return found.sparsities, f"weights pruned {found.sparsity:.3f}", found.metric


def _channels(model, on_val, x, args):
    from prunekit.search import channels
    options = dict(cost=args.cost, threads=args.threads, round_to=args.round_to)
    if args.floor is not None:
        if args.joint:
            raise PruneError("--joint searches to a --target; --floor walks the one-space curves' path")
        found = channels.search_channels_floor(model, x, on_val, args.floor, **options)
    else:
        found = channels.search_channels(model, x, on_val, args.target, joint=args.joint, **options)
    return found.ratios, f"{args.cost} kept {found.kept:.3f} of the dense model's", found.metric
