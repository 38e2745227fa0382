"""A PyTorch Lightning callback that prunes while the Trainer fits:

    trainer = lightning.Trainer(max_epochs=3, callbacks=[PruningCallback("gradual", 0.9)])

The schedule spans the fit's optimizer steps (trainer.estimated_stepping_batches). Batches are
taken as (x, y) for RigL's dense gradients (the module's forward on x, cross entropy unless
`loss_fn` is given). "structured-gradual" needs `example_inputs` and removes the zeroed
channels when the fit ends."""
import lightning

from prunekit.integrations.pruners import Pruner


class PruningCallback(lightning.Callback):
    """Prunes while a Lightning Trainer fits: `method` ("gradual", "structured-gradual",
    "rigl", "set") to `sparsity` over the fit's optimizer steps; options go to
    integrations.Pruner (begin, end, every, include, exclude, loss_fn, example_inputs, ...).
    After the fit, `result` holds structured-gradual's StructuredResult."""
    def __init__(self, method: str = "gradual", sparsity: float = 0.5, **options):
        self.method, self.sparsity, self.options = method, sparsity, options
        self.pruner, self.result = None, None

    def on_fit_start(self, trainer, pl_module):
        self.pruner = Pruner(pl_module, self.method, self.sparsity, int(trainer.estimated_stepping_batches),
                             **self.options)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.pruner.needs_batch:
            x, y = batch[0], batch[1]
            self.pruner.step(x, y)
        else:
            self.pruner.step()

    def on_fit_end(self, trainer, pl_module):
        self.result = self.pruner.finish()
