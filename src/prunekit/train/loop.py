"""fit / evaluate loops. Masks are parametrizations, so they stay enforced with no extra code.

Validation accuracy picks the best epoch (early stopping); the test split is never read here.
Checkpoints are written atomically each epoch and a run with the same folder resumes.
"""
import logging
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from prunekit._utils.atomic import atomic_path
from prunekit._utils.seeding import seeded
from prunekit._utils.validate import check_count, check_range
from prunekit.errors import PruneError
from prunekit.train import distributed

log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    optimizer: str = "sgd"      # "sgd" (momentum, cosine decay) or "adam"
    patience: int = 0           # stop after this many epochs without a better val accuracy; 0 = never
    limit: int = 0              # train on at most this many samples per epoch; 0 = all
    seed: int = 0
    distill: float = 0.0        # with fit(teacher=...): weight of the teacher's soft targets
    temperature: float = 4.0    # distillation temperature


@dataclass
class FitResult:
    best_val: float
    best_epoch: int
    history: list = field(default_factory=list)  # [{"epoch", "loss", "val"}]


def check_config(config: FitConfig) -> FitConfig:
    """Refuse, before any work, a config the loop would fail on deep inside (batch_size 0:
    ZeroDivisionError) or follow without a word (negative epochs: no training at all).
    epochs=0 is allowed: no training, as a fine-tuning budget of zero means."""
    if not isinstance(config, FitConfig):
        raise PruneError(f"config must be a FitConfig, got {type(config).__name__}")
    check_count("FitConfig.batch_size", config.batch_size, 1)
    for name in ("epochs", "patience", "limit"):
        check_count(f"FitConfig.{name}", getattr(config, name), 0)
    if isinstance(config.seed, bool) or not isinstance(config.seed, int):
        raise PruneError(f"FitConfig.seed must be an integer, got {config.seed!r}")
    check_range("FitConfig.lr", config.lr, 0.0, math.inf, "[)")  # 0 is a frozen model, as tests use
    check_range("FitConfig.momentum", config.momentum, 0.0, 1.0, "[)")
    check_range("FitConfig.weight_decay", config.weight_decay, 0.0, math.inf, "[)")
    check_range("FitConfig.distill", config.distill, 0.0, 1.0)
    check_range("FitConfig.temperature", config.temperature, 0.0, math.inf, "()")
    return config


def check_labels(labels: torch.Tensor, outputs: int, where: str) -> None:
    """Every label is a class the model outputs (0 <= label < outputs), checked once on the
    whole label tensor before any batch runs: a dataset that does not fit the model is one
    line, not an IndexError inside the loss (fit) or a silently lower accuracy (evaluate)."""
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= outputs:
        raise PruneError(f"{where} has labels {low}..{high}, but the model has {outputs} outputs (classes "
                         f"0..{outputs - 1}): give data whose classes the model has, or a model with one output "
                         "per class")


@torch.no_grad()
def evaluate(model: nn.Module, split, batch_size: int = 1000) -> float:
    """Top-1 accuracy on a data split (anything with .batches); the training flag is restored.
    Labels the model has no output for are refused (check_labels), on the split's whole label
    tensor (.y) when it has one, else batch by batch."""
    was_training = model.training
    model.eval()
    labels = getattr(split, "y", None)
    correct = total = 0
    try:
        for i, (x, y) in enumerate(split.batches(batch_size)):
            out = model(x)
            if labels is None or i == 0:  # the output count is known from the first batch on
                check_labels(y if labels is None else labels, out.shape[-1], "the evaluation data")
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return correct / max(total, 1)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, split, samples: int = 2000, batch_size: int = 100) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on `samples` of `split` (in
    place; weights untouched). Removing channels shifts the statistics each BatchNorm sees,
    so a freshly pruned model's stale ones misjudge it (EagleEye, Li et al. 2020: with them
    recalibrated, accuracy right after pruning predicts accuracy after fine-tuning far
    better). Does nothing on a model without BatchNorm; the training flag is restored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    was_training, saved = model.training, [(m, m.momentum) for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.eval()
    for norm in norms:
        norm.train()
    try:
        for x, _ in split.batches(batch_size, limit=samples):
            model(x)
    finally:
        for norm, momentum in saved:
            norm.momentum = momentum
        model.train(was_training)
    return model


def _optimizer(model, config):
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    raise PruneError(f"unknown optimizer {config.optimizer!r}: choose sgd or adam")


def _progress(quiet):
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), transient=True, disable=quiet or not sys.stderr.isatty())


def _load_checkpoint(path, model, optimizer, scheduler):
    try:
        state = torch.load(path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except Exception as err:  # truncated file, wrong model, foreign pickle: all refused the same way
        raise PruneError(f"cannot resume from checkpoint {path}: {str(err).splitlines()[0]}; "
                         "delete it to start over") from None
    return state["epoch"], state["best"], state["history"]


def _save_checkpoint(path, **state):
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def distillation_loss(logits, teacher_logits, y, alpha, temperature):
    """(1 - alpha) cross-entropy + alpha T^2 KL(teacher || student) at temperature T (Hinton
    et al. 2015; T^2 keeps the soft term's gradient scale independent of T)."""
    hard = nn.functional.cross_entropy(logits, y)
    if alpha == 0:
        return hard
    soft = nn.functional.kl_div(nn.functional.log_softmax(logits / temperature, -1),
                                nn.functional.log_softmax(teacher_logits / temperature, -1),
                                log_target=True, reduction="batchmean")
    return (1 - alpha) * hard + alpha * temperature ** 2 * soft


def student_loss(model, x, y, teacher=None, alpha=0.0, temperature=4.0):
    """Cross-entropy of model(x); with a teacher and alpha > 0, distillation_loss against the
    teacher's outputs (computed without gradients). For your own training loop."""
    logits = model(x)
    if teacher is None or not alpha:
        return nn.functional.cross_entropy(logits, y)
    with torch.no_grad():
        target = teacher(x)
    return distillation_loss(logits, target, y, alpha, temperature)


def steps_per_epoch(dataset, config) -> int:
    """Optimizer steps each process takes per epoch: under torchrun each rank takes every
    world-th batch, and all take the same count (DDP waits for every rank at each step)."""
    check_config(config)  # callers size schedules with it before fit: batch_size 0 divides by zero
    batches = -(-(config.limit or len(dataset.train)) // config.batch_size)
    return batches if distributed.world() == 1 else batches // distributed.world()


def _train_epoch(model, dataset, optimizer, config, epoch, progress, on_step=None, teacher=None):
    model.train()
    steps, rank, world = steps_per_epoch(dataset, config), distributed.rank(), distributed.world()
    task = progress.add_task(f"epoch {epoch + 1}/{config.epochs}", total=steps)
    total_loss = batches = 0
    for i, (x, y) in enumerate(dataset.train.batches(config.batch_size, shuffle=True, seed=config.seed * 1000 + epoch,
                                                     limit=config.limit or None)):
        if i % world != rank or i // world >= steps:
            continue  # another rank's batch
        loss = student_loss(model, x, y, teacher, config.distill, config.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:  # a pruning schedule, mask regrowth: after the weights moved
            on_step(x, y)
        total_loss, batches = total_loss + loss.item(), batches + 1
        progress.advance(task)
    progress.remove_task(task)
    return total_loss / max(batches, 1)


def fit(model: nn.Module, dataset, config: FitConfig = None, *, checkpoint_dir=None,
        quiet: bool = False, on_step=None, keep_best=True, teacher=None) -> FitResult:
    """Train on dataset.train, pick the epoch with the best dataset.val accuracy, load it.

    `on_step(x, y)` runs after every optimizer step (GradualPruner.step, DynamicSparsity.step).
    With keep_best=False the last epoch's weights stay. keep_best may also be a callable: an
    epoch is a candidate only if it returns True after that epoch, e.g. `lambda: pruner.done`,
    so a schedule is never rolled back to an earlier, denser epoch. With a `teacher`
    (the dense model, say) and config.distill > 0, the loss adds its soft targets."""
    config = check_config(config or FitConfig())
    if config.distill and teacher is None:
        raise PruneError("FitConfig.distill > 0 needs fit(..., teacher=model)")
    if teacher is not None:
        teacher.eval()
    with seeded(config.seed):  # dropout draws from the global RNG: the caller's state is restored
        _check_data(model, dataset)
        return _fit(model, dataset, config, checkpoint_dir, quiet, on_step, keep_best, teacher)


def _check_data(model, dataset) -> None:
    """Before the first step: the model gives one score per class for a sample, and the
    labels it trains and validates on are classes it has, two at least."""
    if len(dataset.train) == 0:
        raise PruneError("the training data is empty")
    flags = [(m, m.training) for m in model.modules()]  # each module's own, restored as it was
    model.eval()
    try:
        with torch.no_grad():
            out = model(dataset.train.x[:2])
    finally:
        for module, flag in flags:
            module.training = flag
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PruneError(f"fit trains classifiers: the model must map samples to (samples, classes) scores, it "
                         f"maps 2 samples to {got}")
    low, high = int(dataset.train.y.min()), int(dataset.train.y.max())
    if low == high:
        raise PruneError(f"the training data holds one class only (label {low}): a classifier needs two at least")
    check_labels(dataset.train.y, out.shape[1], "the training data")
    check_labels(dataset.val.y, out.shape[1], "the validation data")


def _fit(model, dataset, config, checkpoint_dir, quiet, on_step, keep_best, teacher) -> FitResult:
    """fit's loop, inside its seeded scope (under torchrun: see train.distributed)."""
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    start, best, history = 0, {"val": -1.0, "epoch": -1, "model": None}, []
    last = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if last and last.exists():
        start, best, history = _load_checkpoint(last, model, optimizer, scheduler)
        log.info("resuming from %s at epoch %d", last, start)
        if hasattr(on_step, "resume"):  # a pruning schedule continues where the checkpoint left it
            on_step.resume(start * steps_per_epoch(dataset, config))
    trained = distributed.wrap(model)
    with _progress(quiet or not distributed.is_writer()) as progress:
        for epoch in range(start, config.epochs):
            loss = _train_epoch(trained, dataset, optimizer, config, epoch, progress, on_step, teacher)
            scheduler.step()
            val = evaluate(model, dataset.val)
            history.append({"epoch": epoch + 1, "loss": loss, "val": val})
            log.info("epoch %d: loss %.4f, val accuracy %.4f", epoch + 1, loss, val)
            if val > best["val"] and (not callable(keep_best) or keep_best()):
                best = {"val": val, "epoch": epoch + 1,
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            if last and distributed.is_writer():
                _save_checkpoint(last, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                 scheduler=scheduler.state_dict(), epoch=epoch + 1, best=best,
                                 history=history, config=asdict(config))
            distributed.barrier()  # no rank starts the next epoch before the checkpoint is whole
            if config.patience and epoch + 1 - best["epoch"] >= config.patience:
                log.info("early stop: no better val accuracy for %d epochs", config.patience)
                break
    if best["model"] is not None and keep_best:
        model.load_state_dict(best["model"])
    return FitResult(best_val=best["val"], best_epoch=best["epoch"], history=history)
