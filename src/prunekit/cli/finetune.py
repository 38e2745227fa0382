"""prunekit finetune: train a saved model further; masks stay enforced."""
from prunekit.cli._args import add_dataset, load_dataset, positive_float, positive_int


def add(add_parser, common):
    p = add_parser("finetune", parents=[common], help="fine-tune a saved model (masks stay enforced)")
    p.add_argument("input"), p.add_argument("output")
    add_dataset(p)
    p.add_argument("--epochs", type=positive_int, default=2)
    p.add_argument("--lr", type=positive_float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", help="folder for per-epoch checkpoints (resumes if present)")
    p.set_defaults(func=run)


def run(args):
    from prunekit import serialization
    from prunekit.train.loop import FitConfig, fit
    model = serialization.load(args.input)
    result = fit(model, load_dataset(args), FitConfig(epochs=args.epochs, lr=args.lr, seed=args.seed),
                 checkpoint_dir=args.checkpoints, quiet=args.quiet)
    serialization.save(model, args.output)
    print(f"best validation accuracy {result.best_val:.4f} at epoch {result.best_epoch}; wrote {args.output}")
