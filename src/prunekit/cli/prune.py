"""prunekit prune: mask weights (magnitude) or remove channels, heads or blocks (--structured)."""
from prunekit.cli._args import MODEL_HELP, add_dataset, add_weights, check_outputs, load_dataset, load_model


def add(add_parser, common):
    p = add_parser("prune", parents=[common], help="prune a model")
    p.add_argument("input", help=MODEL_HELP)
    p.add_argument("output", help="where to write the pruned model (pk.save)")
    add_weights(p)
    p.add_argument("--sparsity", type=float, required=True,
                   help="fraction of weights (structured: of channels, heads or blocks) to remove")
    p.add_argument("--scope", choices=["global", "layer"], help="default: global (magnitude), layer (structured)")
    p.add_argument("--criterion", default="l1", help="magnitude criterion")
    p.add_argument("--structured", action="store_true", help="remove channels instead of masking weights")
    p.add_argument("--granularity", default="channel", choices=["channel", "head", "layer"])
    p.add_argument("--importance", help="structured criterion: l1, l2, random, taylor, bn_scale, apoz, "
                                        "activation_mean, fpgm, lamp (layer: block_influence, random)")
    p.add_argument("--round-to", type=int, default=1, help="keep channel counts multiples of this")
    p.add_argument("--max-ratio", type=float, default=1.0, help="most any layer may lose")
    p.add_argument("--steps", type=int, default=1, help="prune in this many steps, re-scoring between")
    p.add_argument("--calibration-batches", type=int, default=4,
                   help="training batches for taylor/apoz/activation_mean/block_influence")
    add_dataset(p, help="example inputs for structured analysis (names as for compare)")
    p.add_argument("--format", default="compressed", choices=["dense", "compressed"])
    p.add_argument("--seed", type=int)
    p.set_defaults(func=run)


def run(args):
    from prunekit import serialization
    from prunekit.structured.prune import prune_structured
    from prunekit.unstructured.magnitude import prune_magnitude
    from prunekit.serialization.sources import is_name
    check_outputs(files=[args.output])
    dataset = load_dataset(args) if args.structured or is_name(args.input) else None
    model = load_model(args.input, args, dataset)
    if args.structured:
        calibration = list(dataset.train.batches(64, shuffle=True, seed=0, limit=64 * args.calibration_batches))
        result = prune_structured(
            model, dataset.test.x[:8], ratio=args.sparsity, granularity=args.granularity,
            importance=args.importance, scope=args.scope or "layer", round_to=args.round_to,
            max_ratio=args.max_ratio, steps=args.steps, calibration=calibration, seed=args.seed)
        print(f"parameters {result.params_before:,} -> {result.params_after:,}"
              + (f"; removed blocks {', '.join(result.blocks)}" if result.blocks else ""))
    else:
        prune_magnitude(model, args.sparsity, scope=args.scope or "global", criterion=args.criterion,
                        seed=args.seed)
    serialization.save(model, args.output, format=args.format)
    print(f"wrote {args.output}")

