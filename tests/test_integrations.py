"""Pruning inside training code people already have: a plain loop, the Hugging Face Trainer,
PyTorch Lightning; each on a small real training run that must still learn."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit as pk
from prunekit.integrations import Pruner


def _blobs(n=512, seed=0):
    """Four Gaussian blobs in 16 dimensions: learnable in a few hundred steps."""
    centers = torch.randn(4, 16, generator=torch.Generator().manual_seed(123)) * 3  # the same for every split
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    return centers[y] + torch.randn(n, 16, generator=g), y


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _plain_loop(model, pruner, steps=200):
    x, y = _blobs()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        i = torch.arange(step * 32, step * 32 + 32) % len(y)
        optimizer.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        optimizer.step()
        pruner.step(x[i], y[i])
    return pruner.finish(), _accuracy(model, *_blobs(seed=1))


@pytest.mark.parametrize("method", ["gradual", "rigl", "set"])
def test_plain_loop_reaches_the_sparsity_and_still_learns(method):
    model = _mlp()
    pruner = Pruner(model, method, 0.8, total_steps=200)
    _, accuracy = _plain_loop(model, pruner)
    assert pk.sparsity(model)["global"]["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert accuracy > 0.9
    if method == "rigl":
        assert pruner.inner.updates and pruner.inner.updates[0][1] > 0  # weights moved (fewer as it decays)


def test_plain_loop_structured_gradual_removes_the_channels_at_the_end():
    model = _mlp()
    pruner = Pruner(model, "structured-gradual", 0.5, total_steps=200, example_inputs=_blobs()[0][:4])
    result, accuracy = _plain_loop(model, pruner)
    assert model[0].out_features == 32 and model[2].out_features == 32  # half the hidden units went
    assert result.params_after < 0.5 * result.params_before and accuracy > 0.9


def test_bad_settings_are_refused_before_the_model_changes():
    model = _mlp()
    for kwargs, message in (({"method": "sorcery"}, "unknown pruning method"),
                            ({"method": "structured-gradual"}, "needs example_inputs"),
                            ({"method": "gradual", "begin": 0.8, "end": 0.5}, "end")):
        with pytest.raises(pk.PruneError, match=message):
            Pruner(model, sparsity=0.5, total_steps=10, **kwargs)
    assert pk.sparsity(model)["global"]["zeros"] == 0


def test_hugging_face_trainer_callback_prunes_a_bert_classifier_while_it_trains(tmp_path):
    transformers = pytest.importorskip("transformers")
    from hf_helpers import tiny_bert_task

    from prunekit.integrations.hf import PruningCallback
    model, ids, labels, data = tiny_bert_task()
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=120, per_device_train_batch_size=16,
                                          learning_rate=3e-3, use_cpu=True, report_to=[], save_strategy="no",
                                          logging_strategy="no", disable_tqdm=True)
    callback = PruningCallback("rigl", 0.5, include=[r"encoder\."])
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    report = pk.sparsity(model)["layers"]
    encoder = [row for name, row in report.items() if name.startswith("bert.encoder.")]
    assert encoder and sum(r["zeros"] for r in encoder) / sum(r["params"] for r in encoder) == pytest.approx(0.5, abs=0.01)
    assert callback.pruner.inner.updates  # weights moved during training
    with torch.no_grad():
        accuracy = float((model(input_ids=ids).logits.argmax(1) == labels).float().mean())
    assert accuracy > 0.8


def _trainer_run(out, method="gradual", resume=None):
    """A 40-step Trainer run of the tiny BERT task, checkpointed every 20 steps; returns the model."""
    transformers = pytest.importorskip("transformers")
    from hf_helpers import tiny_bert_task

    from prunekit.integrations.hf import PruningCallback
    model, _, _, data = tiny_bert_task()
    args = transformers.TrainingArguments(output_dir=str(out), max_steps=40, per_device_train_batch_size=16,
                                          learning_rate=3e-3, use_cpu=True, report_to=[], save_strategy="steps",
                                          save_steps=20, logging_strategy="no", disable_tqdm=True, seed=0)
    options = {"example_inputs": (torch.ones(1, 8, dtype=torch.long),)} if method == "structured-gradual" \
        else {"include": [r"encoder\."]}
    callback = PruningCallback(method, 0.5, end=0.9, **options)
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train(
        resume_from_checkpoint=resume)
    return model


def test_a_trainer_run_resumed_from_its_checkpoint_ends_as_the_run_that_was_not_stopped(tmp_path):
    """The masks are in the model before the Trainer loads a checkpoint: resuming at step 20
    gives the same masks and weights at step 40 as running through."""
    whole = _trainer_run(tmp_path / "whole")
    resumed = _trainer_run(tmp_path / "resumed", resume=str(tmp_path / "whole" / "checkpoint-20"))
    assert pk.sparsity(resumed)["global"]["zeros"] == pk.sparsity(whole)["global"]["zeros"] > 0
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_structured_gradual_refuses_to_resume_from_a_trainer_checkpoint(tmp_path):
    pytest.importorskip("transformers")
    _trainer_run(tmp_path / "whole", "structured-gradual")
    with pytest.raises(pk.PruneError, match="cannot resume 'structured-gradual'"):
        _trainer_run(tmp_path / "again", "structured-gradual", resume=str(tmp_path / "whole" / "checkpoint-20"))


def test_lightning_callback_prunes_while_the_trainer_fits():
    lightning = pytest.importorskip("lightning")
    from prunekit.integrations.lightning import PruningCallback

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    x, y = _blobs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    module, callback = Module(), PruningCallback("gradual", 0.9)
    trainer = lightning.Trainer(max_epochs=12, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, loader)
    assert pk.sparsity(module)["global"]["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert _accuracy(module, *_blobs(seed=1)) > 0.9


ACCELERATE_SCRIPT = '''
import hashlib, sys, transformers
import torch.distributed as dist
sys.path.insert(0, sys.argv[2])  # the tests folder
from hf_helpers import tiny_bert_task
import prunekit as pk
from prunekit import masks
from prunekit.integrations.hf import PruningCallback
model, ids, labels, data = tiny_bert_task()
args = transformers.TrainingArguments(output_dir=sys.argv[1], max_steps=40, per_device_train_batch_size=8,
                                      learning_rate=3e-3, use_cpu=True, report_to=[], save_strategy="no",
                                      logging_strategy="no", disable_tqdm=True)
callback = PruningCallback("gradual", 0.6, include=[r"encoder[.]"])
transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
kept = b"".join(masks.get_mask(m, t).numpy().tobytes() for _, m, t in masks.masked_modules(model))
rank = dist.get_rank() if dist.is_initialized() else 0
world = dist.get_world_size() if dist.is_initialized() else 1
zeros = sum(r["zeros"] for n, r in pk.sparsity(model)["layers"].items() if n.startswith("bert.encoder."))
total = sum(r["params"] for n, r in pk.sparsity(model)["layers"].items() if n.startswith("bert.encoder."))
open(f"{sys.argv[1]}/rank{rank}.txt", "w").write(f"{world} {hashlib.sha256(kept).hexdigest()} {zeros / total:.4f}")
if dist.is_initialized():  # both ranks leave gloo together: one exiting mid-teardown aborts the other
    dist.barrier()
    dist.destroy_process_group()
'''


def test_trainer_callback_under_accelerate_launch_gives_every_rank_rank_zeros_masks(tmp_path):
    pytest.importorskip("transformers")
    import os
    import subprocess
    import sys
    from pathlib import Path
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate is not installed")
    script = tmp_path / "train.py"
    script.write_text(ACCELERATE_SCRIPT)
    # accelerate's multi-process launcher; the script's use_cpu=True puts both processes on gloo
    done = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29561",
                           str(script), str(tmp_path), str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=240,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert lines[0][0] == "2" and lines[0][1] == lines[1][1]  # two processes, the same masks
    assert float(lines[0][2]) == pytest.approx(0.6, abs=0.01)
