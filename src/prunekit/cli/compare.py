"""prunekit compare: every method side by side on one model (the main job)."""
import sys
from pathlib import Path

from prunekit.cli._args import MODEL_HELP, add_dataset, add_weights, floats, write_json


def add(add_parser, common):
    p = add_parser("compare", parents=[common], help="magnitude vs structured pruning side by side (the main job)")
    p.add_argument("--model", help=MODEL_HELP + "; default: the dataset's zoo model. A model with its weights "
                                    "(a file, hf:DIR, --weights) is the dense model as it is: no dense training")
    add_weights(p)
    add_dataset(p, default=None)
    p.add_argument("--methods", help="comma-separated, e.g. magnitude-global,structured,hybrid,gradual,"
                                     "lottery,rigl,nm-2:4,lamp,search (README lists all)")
    p.add_argument("--sparsities", type=floats, help="comma-separated fractions, e.g. 0.5,0.9")
    p.add_argument("--epochs", type=int, help="dense training epochs")
    p.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs after each pruning")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="threads for latency timing (default 2)")
    p.add_argument("--quick", action="store_true", help="a short run (about 3 minutes on 2 cores)")
    p.add_argument("--out", default="runs/compare", help="output folder")
    p.add_argument("--json", help="also write the result JSON here")
    p.set_defaults(func=run)


def run(args):
    from rich.console import Console

    from prunekit.experiments.compare import CompareConfig, run_compare
    from prunekit.report import comparison_table, write_report
    overrides = dict(model=args.model, weights=args.weights, trust_pickle=args.trust_pickle or None, dataset=args.dataset, seed=args.seed, epochs=args.epochs,
                     finetune_epochs=args.finetune_epochs, out=Path(args.out), threads=args.threads,
                     methods=tuple(args.methods.split(",")) if args.methods else None,
                     sparsities=args.sparsities, image_size=args.image_size)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    config = CompareConfig.quick(**overrides) if args.quick else CompareConfig(**overrides)
    result = run_compare(config, quiet=args.quiet)
    config.out.mkdir(parents=True, exist_ok=True)
    write_json(config.out / "compare.json", result)
    if args.json:
        write_json(args.json, result)
    write_report(config.out, compute_sensitivity=False)
    Console(width=None if sys.stdout.isatty() else 150).print(comparison_table(result))
    print(f"wrote {config.out}/compare.json, plots and report.html")
