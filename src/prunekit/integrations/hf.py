"""A Hugging Face Trainer callback that prunes while the Trainer trains:

    trainer = Trainer(model, args, train_dataset=..., callbacks=[PruningCallback("gradual", 0.5)])

The schedule spans the Trainer's optimizer steps (state.max_steps). "structured-gradual" needs
`example_inputs` (a batch of keyword inputs, as the model takes them) and removes the zeroed
channels when training ends. RigL takes a batch from the train dataloader at each update and
uses the model's own loss (`outputs.loss`); the others need no batch. Under `accelerate
launch` (or torchrun) the masks are computed on rank 0 and broadcast (integrations.ddp)."""
from transformers import TrainerCallback

from prunekit.errors import PruneError
from prunekit.integrations.ddp import RankZero
from prunekit.integrations.pruners import Pruner
from prunekit.train import distributed


def _loss(outputs, labels):
    return outputs.loss  # a Hugging Face model computes its loss from the labels in the batch


class PruningCallback(TrainerCallback):
    """Prunes while a Hugging Face Trainer trains: `method` ("gradual", "structured-gradual",
    "rigl", "set") to `sparsity` over the run's optimizer steps; options go to
    integrations.Pruner (begin, end, every, include, exclude, scope, example_inputs, ...).
    After training, `result` holds structured-gradual's StructuredResult."""
    def __init__(self, method: str = "gradual", sparsity: float = 0.5, **options):
        self.method, self.sparsity, self.options = method, sparsity, options
        self.pruner, self.result = None, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step:
            raise PruneError("PruningCallback starts with the run: resuming a pruning run from a Trainer checkpoint "
                             "is not supported; start it again, or fine-tune the saved pruned model")
        self.pruner = Pruner(model, self.method, self.sparsity, state.max_steps, loss_fn=_loss, **self.options)
        if distributed.active():  # under accelerate launch / torchrun: masks from rank 0, broadcast
            self.pruner = RankZero(self.pruner, model)

    def on_step_end(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if self.pruner.needs_batch:
            batch = next(iter(train_dataloader))
            device = next(model.parameters()).device
            self.pruner.step({k: v.to(device) for k, v in batch.items()}, None)
        else:
            self.pruner.step()

    def on_train_end(self, args, state, control, **kwargs):
        self.result = self.pruner.finish()
