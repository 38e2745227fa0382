"""prunekit finetune: train a model further; masks stay enforced."""
from prunekit.cli._args import MODEL_HELP, add_dataset, add_weights, load_dataset, load_model, positive_float, positive_int


def add(add_parser, common):
    p = add_parser("finetune", parents=[common], help="fine-tune a model (masks stay enforced)")
    p.add_argument("input", help=MODEL_HELP)
    p.add_argument("output", help="where to write the fine-tuned model (pk.save)")
    add_weights(p)
    add_dataset(p)
    p.add_argument("--epochs", type=positive_int, default=2)
    p.add_argument("--lr", type=positive_float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", help="folder for per-epoch checkpoints (resumes if present)")
    p.set_defaults(func=run)


def run(args):
    from prunekit import serialization
    from prunekit.train.loop import FitConfig, fit
    dataset = load_dataset(args)
    model = load_model(args.input, args, dataset)
    result = fit(model, dataset, FitConfig(epochs=args.epochs, lr=args.lr, seed=args.seed),
                 checkpoint_dir=args.checkpoints, quiet=args.quiet)
    serialization.save(model, args.output)
    print(f"best validation accuracy {result.best_val:.4f} at epoch {result.best_epoch}; wrote {args.output}")
