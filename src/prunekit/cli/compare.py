"""prunekit compare: every method side by side on one model (the main job)."""
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from prunekit.cli._args import MODEL_HELP, add_dataset, add_weights, check_outputs, floats, outputs, write_json


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

    from prunekit._utils.atomic import atomic_dir
    from prunekit.experiments.compare import CompareConfig, resume_dir, run_compare, validate
    from prunekit.report import comparison_table, write_report
    overrides = dict(model=args.model, weights=args.weights, trust_pickle=args.trust_pickle or None, dataset=args.dataset, seed=args.seed, epochs=args.epochs,
                     finetune_epochs=args.finetune_epochs, out=Path(args.out), threads=args.threads,
                     methods=tuple(args.methods.split(",")) if args.methods else None,
                     sparsities=args.sparsities, image_size=args.image_size)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    config = CompareConfig.quick(**overrides) if args.quick else CompareConfig(**overrides)
    validate(config)
    check_outputs(files=[args.json], folders=[config.out])
    # everything is written under temporary names, renamed when the run is complete
    with outputs(args.json) as (json_path,), atomic_dir(config.out) as staged:
        result = run_compare(replace(config, out=staged, checkpoints=resume_dir(config.out)), quiet=args.quiet)
        result["config"]["out"] = str(config.out)
        write_json(staged / "compare.json", result)
        if json_path:
            write_json(json_path, result)
        write_report(staged, compute_sensitivity=False)
    shutil.rmtree(resume_dir(config.out), ignore_errors=True)  # complete: nothing left to resume
    Console(width=None if sys.stdout.isatty() else 150).print(comparison_table(result))
    print(f"wrote {config.out}/compare.json, plots and report.html")
