"""prunekit's command line: parse, call the library, print. Errors are one line, exit 2."""
import argparse
import json
import logging
import math
import platform
import sys
from pathlib import Path

from prunekit.errors import PruneError

log = logging.getLogger("prunekit")


def _floats(text):
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _in_range(text, cast, low, high, what):
    """`text` as `cast`, with low < value <= high (an argparse type: a bad one is refused)."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not low < value <= high:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def _positive_int(text):
    return _in_range(text, int, 0, float("inf"), "a whole number >= 1")


def _positive_float(text):
    return _in_range(text, float, 0.0, sys.float_info.max, "a finite number > 0")


def _fraction(text):
    """A fraction in (0, 1]: an accuracy retention floor."""
    return _in_range(text, float, 0.0, 1.0, "a fraction in (0, 1]")


def _cut(text):
    """A fraction in (0, 1): how much of a cost to remove."""
    return _in_range(text, float, 0.0, math.nextafter(1.0, 0.0), "a fraction in (0, 1)")


def _write_json(path, payload):
    from prunekit._utils.atomic import write_text
    write_text(Path(path), json.dumps(payload, indent=2, default=str))


def cmd_compare(args):
    from rich.console import Console

    from prunekit.experiments.compare import CompareConfig, run_compare
    from prunekit.report import comparison_table, write_html, write_plots
    overrides = dict(model=args.model, dataset=args.dataset, seed=args.seed, epochs=args.epochs,
                     finetune_epochs=args.finetune_epochs, out=Path(args.out), threads=args.threads,
                     methods=tuple(args.methods.split(",")) if args.methods else None,
                     sparsities=args.sparsities)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    config = CompareConfig.quick(**overrides) if args.quick else CompareConfig(**overrides)
    result = run_compare(config, quiet=args.quiet)
    config.out.mkdir(parents=True, exist_ok=True)
    _write_json(config.out / "compare.json", result)
    if args.json:
        _write_json(args.json, result)
    write_plots(result, config.out)
    write_html(result, config.out)
    Console(width=None if sys.stdout.isatty() else 150).print(comparison_table(result))
    print(f"wrote {config.out}/compare.json, plots and report.html")


def cmd_prune(args):
    from prunekit import data
    from prunekit import serialization as export
    from prunekit.unstructured.magnitude import prune_magnitude
    from prunekit.structured.prune import prune_structured
    model = export.load(args.input)
    if args.structured:
        dataset = data.load(args.dataset)
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
    export.save(model, args.output, format=args.format)
    print(f"wrote {args.output}")


def cmd_finetune(args):
    from prunekit import data
    from prunekit import serialization as export
    from prunekit.train.loop import FitConfig, fit
    model = export.load(args.input)
    result = fit(model, data.load(args.dataset), FitConfig(epochs=args.epochs, lr=args.lr, seed=args.seed),
                 checkpoint_dir=args.checkpoints, quiet=args.quiet)
    export.save(model, args.output)
    print(f"best validation accuracy {result.best_val:.4f} at epoch {result.best_epoch}; wrote {args.output}")


def cmd_evaluate(args):
    from prunekit import data
    from prunekit import serialization as export
    from prunekit.measure import measure
    from prunekit.train.loop import evaluate
    model = export.load(args.input)
    dataset = data.load(args.dataset)
    metrics = measure(model, dataset.test.x[:args.batch])
    metrics["accuracy"] = evaluate(model, dataset.test)
    if args.json:
        _write_json(args.json, metrics)
    for key in ("accuracy", "params", "nonzeros", "sparsity", "macs", "effective_macs", "peak_memory"):
        print(f"{key:>15}: {metrics.get(key)}")
    print(f"{'latency':>15}: {1e3 * metrics['latency']['median_s']:.3f} ms (batch {args.batch})")


def cmd_export(args):
    from prunekit import serialization as export
    export.save(export.load(args.input), args.output, format=args.format)
    print(f"wrote {args.output}")


def cmd_sensitivity(args):
    from prunekit import data
    from prunekit import serialization as export
    from prunekit.report.plots import write_sensitivity_plot
    from prunekit.search.layerwise import sensitivity
    from prunekit.train.loop import evaluate
    model = export.load(args.input)
    dataset = data.load(args.dataset)
    curves = sensitivity(model, lambda m: evaluate(m, dataset.val), sparsities=args.sparsities)
    dense = curves["dense"]
    print(f"validation accuracy, one layer pruned at a time (dense {100 * dense:.2f} %)")
    print(f"{'layer':<24}" + "".join(f"{s:>8.0%}" for s in args.sparsities))
    for name, curve in curves.items():
        if name != "dense":
            print(f"{name:<24}" + "".join(f"{100 * curve[s]:>8.2f}" for s in args.sparsities))
    if args.plot:
        write_sensitivity_plot(curves, args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        _write_json(args.json, {"dense": dense, "layers": {n: {str(s): v for s, v in c.items()}
                                                           for n, c in curves.items() if n != "dense"}})


def _search_weights(model, on_val, x, args):
    from prunekit.search import layerwise as search
    from prunekit.measure.macs import layer_stats
    if args.joint:
        raise PruneError("--joint is a channel search: add --structured")
    if args.cost == "latency":
        raise PruneError("--cost latency needs --structured: masked weights do not make dense kernels faster")
    if args.floor is not None:
        if args.cost != "params":
            raise PruneError("--floor without --structured finds the sparsest model by weights: use --cost params")
        found = search.search_floor(model, on_val, args.floor)
    else:
        sizes = {s["name"]: s["macs"] for s in layer_stats(model, (x,))} if args.cost == "macs" else None
        found = search.search(model, on_val, args.target, sizes=sizes)
    return found.sparsities, f"weights pruned {found.sparsity:.3f}", found.metric


def _search_channels(model, on_val, x, args):
    from prunekit.search import channels as channel_search
    options = dict(cost=args.cost, threads=args.threads, round_to=args.round_to)
    if args.floor is not None:
        if args.joint:
            raise PruneError("--joint searches to a --target; --floor walks the one-space curves' path")
        found = channel_search.search_channels_floor(model, x, on_val, args.floor, **options)
    else:
        found = channel_search.search_channels(model, x, on_val, args.target, joint=args.joint, **options)
    return found.ratios, f"{args.cost} kept {found.kept:.3f} of the dense model's", found.metric


def cmd_search(args):
    from prunekit import data
    from prunekit import serialization as export
    from prunekit.train.loop import evaluate
    if (args.target is None) == (args.floor is None):
        raise PruneError("give exactly one of --target (fraction of the cost to remove) or --floor "
                         "(validation accuracy retention to keep)")
    model = export.load(args.input)
    dataset = data.load(args.dataset)
    on_val = lambda m: evaluate(m, dataset.val)  # noqa: E731 - decisions read the validation split only
    dense = on_val(model)
    search = _search_channels if args.structured else _search_weights
    allocation, cost, metric = search(model, on_val, dataset.val.x[:args.batch], args)
    what = "channels removed" if args.structured else "sparsity"
    for name, value in allocation.items():
        print(f"{name:<24}{what} {value:.3f}")
    print(f"{cost}; validation accuracy {100 * dense:.2f} % -> {100 * metric:.2f} % (before fine-tuning)")
    export.save(model, args.output, format=args.format)
    print(f"wrote {args.output}")
    if args.json:
        _write_json(args.json, {"allocation": allocation, "cost": args.cost, "summary": cost,
                                "dense_val_accuracy": dense, "val_accuracy": metric})


def cmd_env(args):
    import numpy
    import torch
    info = {"prunekit": __import__("prunekit").__version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    for key, value in info.items():
        print(f"{key:>10}: {value}")
    if args.json:
        _write_json(args.json, info)


def _add_compare(add, common):
    p = add("compare", parents=[common], help="magnitude vs structured pruning side by side (the main job)")
    p.add_argument("--model", help="zoo model (lenet5, lenet300, mlp1d); default: the dataset's")
    p.add_argument("--dataset", help="mnist (default), fashion-mnist, mnist1d, digits, or an IDX folder")
    p.add_argument("--methods", help="comma-separated, e.g. magnitude-global,structured,hybrid,gradual,"
                                     "lottery,rigl,nm-2:4,lamp,search (README lists all)")
    p.add_argument("--sparsities", type=_floats, help="comma-separated fractions, e.g. 0.5,0.9")
    p.add_argument("--epochs", type=int, help="dense training epochs")
    p.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs after each pruning")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="threads for latency timing (default 2)")
    p.add_argument("--quick", action="store_true", help="a short run (about 3 minutes on 2 cores)")
    p.add_argument("--out", default="runs/compare", help="output folder")
    p.add_argument("--json", help="also write the result JSON here")
    p.set_defaults(func=cmd_compare)


def _add_prune(add, common):
    p = add("prune", parents=[common], help="prune a saved model")
    p.add_argument("input"), p.add_argument("output")
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
    p.add_argument("--dataset", default="mnist", help="example inputs for structured analysis")
    p.add_argument("--format", default="compressed", choices=["dense", "compressed"])
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_prune)


def _add_finetune(add, common):
    p = add("finetune", parents=[common], help="fine-tune a saved model (masks stay enforced)")
    p.add_argument("input"), p.add_argument("output")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--epochs", type=_positive_int, default=2)
    p.add_argument("--lr", type=_positive_float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", help="folder for per-epoch checkpoints (resumes if present)")
    p.set_defaults(func=cmd_finetune)


def _add_evaluate(add, common):
    p = add("evaluate", parents=[common], help="accuracy, counts, MACs, latency of a saved model")
    p.add_argument("input")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--batch", type=_positive_int, default=64)
    p.add_argument("--json")
    p.set_defaults(func=cmd_evaluate)


def _add_export(add, common):
    p = add("export", parents=[common], help="re-save a model as dense or compressed safetensors")
    p.add_argument("input"), p.add_argument("output")
    p.add_argument("--format", default="compressed", choices=["dense", "compressed"])
    p.set_defaults(func=cmd_export)


def _add_sensitivity(add, common):
    p = add("sensitivity", parents=[common], help="validation accuracy vs sparsity, one layer at a time")
    p.add_argument("input")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--sparsities", type=_floats, default=(0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98))
    p.add_argument("--plot", help="write the curves as a PNG here")
    p.add_argument("--json")
    p.set_defaults(func=cmd_sensitivity)


def _add_search(add, common):
    p = add("search", parents=[common], help="per-layer ratios that meet a target (or an accuracy floor)")
    p.add_argument("input"), p.add_argument("output")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--cost", default="params", choices=["params", "macs", "latency"],
                   help="what the target counts; latency is timed on this machine (needs --structured)")
    p.add_argument("--target", type=_cut, help="fraction of the cost to remove, e.g. 0.5")
    p.add_argument("--floor", type=_fraction, help="instead: the cheapest model keeping this validation "
                                               "accuracy retention, e.g. 0.99")
    p.add_argument("--structured", action="store_true", help="remove channels instead of masking weights")
    p.add_argument("--round-to", type=_positive_int, default=1, help="structured: keep channel counts multiples of this")
    p.add_argument("--batch", type=_positive_int, default=64, help="example batch for MACs and latency")
    p.add_argument("--threads", type=_positive_int, default=1, help="threads for latency timing")
    p.add_argument("--joint", action="store_true", help="structured --target: score each step on top of the "
                                                         "cuts so far (NetAdapt's greedy; slower, sees interactions)")
    p.add_argument("--format", default="compressed", choices=["dense", "compressed"])
    p.add_argument("--json")
    p.set_defaults(func=cmd_search)


def _add_env(add, common):
    p = add("env", parents=[common], help="versions, for bug reports")
    p.add_argument("--json")
    p.set_defaults(func=cmd_env)


def _parser():
    parser = argparse.ArgumentParser(prog="prunekit", description="Prune PyTorch models and measure what it bought.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in (_add_compare, _add_prune, _add_finetune, _add_evaluate, _add_export,
                        _add_sensitivity, _add_search, _add_env):
        add_command(sub.add_parser, common)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if not args.quiet:
        from rich.logging import RichHandler
        logging.basicConfig(level=logging.INFO, format="%(message)s",
                            handlers=[RichHandler(show_path=False, console=None)])
    try:
        args.func(args)
    except PruneError as err:
        print(f"prunekit: error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # an unwritable path, a value torch refuses
        print(f"prunekit: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunekit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
