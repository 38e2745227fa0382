"""A Hugging Face Trainer callback that prunes while the Trainer trains:

    trainer = Trainer(model, args, train_dataset=..., callbacks=[PruningCallback("gradual", 0.5)])

The schedule spans the Trainer's optimizer steps (state.max_steps). "structured-gradual" needs
`example_inputs` (one batch as positional tensors: for a BERT, `(input_ids,)`) and removes the zeroed
channels when training ends. RigL takes a batch from the train dataloader at each update and
uses the model's own loss (`outputs.loss`); the others need no batch. Under `accelerate
launch` (or torchrun) the masks are computed on rank 0 and broadcast (integrations.ddp).

The masks are put in when the Trainer is built (on_init_end), before it can load a checkpoint:
they are in the model's state dict, so `trainer.train(resume_from_checkpoint=...)` loads them
and the schedule continues from the checkpoint's step (gradual, rigl, set; not
structured-gradual, whose zeroed channels live in the pruner)."""
from transformers import TrainerCallback

from prunekit.errors import PruneError
from prunekit.integrations.ddp import RankZero, broadcast_masked
from prunekit.integrations.pruners import Pruner, check_method, install_masks, mask_options
from prunekit.train import distributed


def _loss(outputs, labels):
    return outputs.loss  # a Hugging Face model computes its loss from the labels in the batch


class PruningCallback(TrainerCallback):
    """Prunes while a Hugging Face Trainer trains: `method` ("gradual", "structured-gradual",
    "rigl", "set") to `sparsity` over the run's optimizer steps; options go to
    integrations.Pruner (begin, end, every, include, exclude, scope, example_inputs, ...).
    After training, `result` holds structured-gradual's StructuredResult."""
    def __init__(self, method: str = "gradual", sparsity: float = 0.5, **options):
        check_method(method, sparsity)
        self.method, self.sparsity, self.options = method, sparsity, options
        self.pruner, self.result, self.masks_ready = None, None, False

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None and self.method != "structured-gradual":
            install_masks(model, self.method, self.sparsity, **mask_options(self.options))
            self.masks_ready = True

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step and not self.masks_ready:
            raise PruneError(f"PruningCallback cannot resume {self.method!r} from a Trainer checkpoint (only gradual, "
                             "rigl and set, with the model given to the Trainer); start it again")
        self.pruner = Pruner(model, self.method, self.sparsity, state.max_steps, loss_fn=_loss,
                             masks_ready=self.masks_ready, **self.options)
        self.pruner.resume(state.global_step)
        if distributed.active():  # under accelerate launch / torchrun: masks from rank 0, broadcast
            broadcast_masked(model)
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
