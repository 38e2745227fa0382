"""prunekit sensitivity: validation accuracy against sparsity, one layer pruned at a time."""
from prunekit.cli._args import add_dataset, check_outputs, floats, load_dataset, outputs, write_json


def add(add_parser, common):
    p = add_parser("sensitivity", parents=[common], help="validation accuracy vs sparsity, one layer at a time")
    p.add_argument("input")
    add_dataset(p)
    p.add_argument("--sparsities", type=floats, default=(0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98))
    p.add_argument("--plot", help="write the curves as a PNG here")
    p.add_argument("--json")
    p.set_defaults(func=run)


def run(args):
    from prunekit import serialization
    from prunekit.report.plots import write_sensitivity_plot
    from prunekit.search.layerwise import sensitivity
    from prunekit.train.loop import evaluate
    check_outputs(files=[args.plot, args.json])
    model = serialization.load(args.input)
    dataset = load_dataset(args)
    curves = sensitivity(model, lambda m: evaluate(m, dataset.val), sparsities=args.sparsities)
    dense = curves["dense"]
    print(f"validation accuracy, one layer pruned at a time (dense {100 * dense:.2f} %)")
    print(f"{'layer':<24}" + "".join(f"{s:>8.0%}" for s in args.sparsities))
    for name, curve in curves.items():
        if name != "dense":
            print(f"{name:<24}" + "".join(f"{100 * curve[s]:>8.2f}" for s in args.sparsities))
    with outputs(args.plot, args.json) as (plot, json_path):  # both or neither
        if plot:
            write_sensitivity_plot(curves, plot)
        if json_path:
            write_json(json_path, {"dense": dense, "layers": {n: {str(s): v for s, v in c.items()}
                                                              for n, c in curves.items() if n != "dense"}})
    if args.plot:
        print(f"wrote {args.plot}")
