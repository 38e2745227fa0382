"""prunekit finetune: train a model further; masks stay enforced. With --prune, prune while
training (a schedule over the run's steps). Under torchrun, data-parallel (DDP): each rank
trains on its share of the batches, masks are computed on rank 0 and broadcast, rank 0 alone
writes checkpoints and the output, and a run restarted with the same --checkpoints resumes."""
from prunekit.cli._args import (
    MODEL_HELP,
    add_dataset,
    add_weights,
    check_outputs,
    load_dataset,
    load_model,
    positive_float,
    positive_int,
)


def add(add_parser, common):
    p = add_parser("finetune", parents=[common], help="fine-tune a model (masks stay enforced), pruning as it trains")
    p.add_argument("input", help=MODEL_HELP)
    p.add_argument("output", help="where to write the fine-tuned model (pk.save)")
    add_weights(p)
    add_dataset(p)
    p.add_argument("--epochs", type=positive_int, default=2)
    p.add_argument("--lr", type=positive_float, default=0.01)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prune", choices=["gradual", "rigl", "set"],
                   help="prune while training: gradual (magnitude, cubic schedule), rigl or set (dynamic sparsity)")
    p.add_argument("--sparsity", type=float, default=0.9, help="with --prune: the final sparsity (default 0.9)")
    p.add_argument("--checkpoints", help="folder for per-epoch checkpoints (resumes if present)")
    p.set_defaults(func=run)


def run(args):
    import torch.distributed as dist

    from prunekit import serialization
    from prunekit.errors import PruneError
    from prunekit.integrations.ddp import RankZero
    from prunekit.integrations.pruners import Pruner
    from prunekit.train import distributed
    from prunekit.train.loop import FitConfig, fit, steps_per_epoch
    check_outputs(files=[args.output], folders=[args.checkpoints])
    distributed.start()
    dataset = load_dataset(args)
    model = load_model(args.input, args, dataset)
    config = FitConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, batch_size=args.batch_size)
    pruner = None
    if args.prune:
        pruner = RankZero(Pruner(model, args.prune, args.sparsity, args.epochs * steps_per_epoch(dataset, config)),
                          model)
    # pruning: the last epoch's weights (an earlier "best" one may be denser than asked)
    try:
        result = fit(model, dataset, config, checkpoint_dir=args.checkpoints, quiet=args.quiet, on_step=pruner,
                     keep_best=not args.prune)
    except RuntimeError as err:  # another rank died: not this input's fault, nor a bug here
        if not (isinstance(err, dist.DistError) or any(k in str(err).lower() for k in ("gloo", "nccl"))):
            raise
        raise PruneError(f"a process of this torchrun job stopped ({str(err).splitlines()[0][:160]}); run the job "
                         "again with the same --checkpoints to resume from its last epoch") from None
    if distributed.is_writer():
        serialization.save(model, args.output)
        print(f"best validation accuracy {result.best_val:.4f} at epoch {result.best_epoch}; wrote {args.output}")
    distributed.barrier()
