import pytest
import torch

import prunekit as pk
from prunekit import data, train, zoo
from prunekit.train import FitConfig, evaluate, fit


def test_fit_learns_and_keeps_best_val(digits, tmp_path):
    torch.manual_seed(0)
    model = zoo.build("lenet300", in_features=64)
    before = evaluate(model, digits.val)
    result = fit(model, digits, FitConfig(epochs=4, lr=0.05, batch_size=64), checkpoint_dir=tmp_path, quiet=True)
    assert result.best_val == max(h["val"] for h in result.history)
    assert evaluate(model, digits.val) == pytest.approx(result.best_val)  # best epoch is loaded
    assert result.best_val > before + 0.3
    assert (tmp_path / "last.pt").exists()


def test_resume_after_a_crash_matches_an_uninterrupted_run(digits, tmp_path, monkeypatch):
    config = FitConfig(epochs=3, lr=0.05, batch_size=64)
    torch.manual_seed(0)
    init = zoo.build("lenet300", in_features=64).state_dict()
    straight = zoo.build("lenet300", in_features=64)
    straight.load_state_dict(init)
    full = fit(straight, digits, config, quiet=True)

    real_epoch = train.loop._train_epoch

    def crash_in_third_epoch(model, dataset, optimizer, config, epoch, *rest):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(model, dataset, optimizer, config, epoch, *rest)
    crashed = zoo.build("lenet300", in_features=64)
    crashed.load_state_dict(init)
    monkeypatch.setattr(train.loop, "_train_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(crashed, digits, config, checkpoint_dir=tmp_path, quiet=True)
    monkeypatch.setattr(train.loop, "_train_epoch", real_epoch)
    resumed = zoo.build("lenet300", in_features=64)  # fresh weights: the checkpoint must restore them
    result = fit(resumed, digits, config, checkpoint_dir=tmp_path, quiet=True)
    assert [h["val"] for h in result.history] == [h["val"] for h in full.history]
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()))


def test_masks_stay_during_fit(digits):
    model = zoo.build("lenet300", in_features=64)
    pk.prune_magnitude(model, 0.9)
    fit(model, digits, FitConfig(epochs=1, batch_size=64), quiet=True)
    assert pk.sparsity(model)["global"]["sparsity"] == pytest.approx(0.9, abs=1e-4)


def test_corrupt_checkpoint_is_refused(digits, tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    model = zoo.build("lenet300", in_features=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(pk.PruneError, match="checkpoint"):
        fit(model, digits, FitConfig(epochs=1), checkpoint_dir=tmp_path, quiet=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_early_stopping(digits):
    model = zoo.build("lenet300", in_features=64)
    result = fit(model, digits, FitConfig(epochs=50, lr=0.0, patience=2, batch_size=256), quiet=True)
    assert len(result.history) == 3  # lr 0: no epoch improves on the first


def test_distillation_loss_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    logits, teacher, y = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g), torch.randint(0, 10, (8,), generator=g)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert train.distillation_loss(logits, teacher, y, 0.0, 4.0) == ce
    assert train.distillation_loss(logits, logits, y, 1.0, 4.0).abs() < 1e-6   # same distribution: no KL
    p, log_q = torch.softmax(teacher / 2, -1), torch.log_softmax(logits / 2, -1)
    kl = (p * (p.log() - log_q)).sum(-1).mean()
    torch.testing.assert_close(train.distillation_loss(logits, teacher, y, 0.25, 2.0), 0.75 * ce + 0.25 * 4 * kl)


def test_fit_with_a_teacher_pulls_the_student_towards_it(digits):
    torch.manual_seed(0)
    teacher = zoo.build("lenet300", in_features=64)
    fit(teacher, digits, FitConfig(epochs=3, lr=0.05, batch_size=64), quiet=True)
    student = zoo.build("lenet300", in_features=64)

    def agreement():
        with torch.no_grad():
            return float((student(digits.val.x).argmax(1) == teacher(digits.val.x).argmax(1)).float().mean())
    before = agreement()
    fit(student, digits, FitConfig(epochs=2, lr=0.05, batch_size=64, distill=1.0), teacher=teacher, quiet=True)
    assert agreement() > before + 0.4  # distill=1: no labels, all it learns comes from the teacher
    with pytest.raises(pk.PruneError, match="needs fit"):
        fit(student, digits, FitConfig(epochs=1, distill=0.5), quiet=True)


def test_keep_best_callable_only_considers_epochs_it_allows(digits):
    from prunekit.training.schedules import GradualPruner, Schedule, steps_per_epoch
    torch.manual_seed(0)
    model = zoo.build("lenet300", in_features=64)
    per_epoch = steps_per_epoch(len(digits.train), 64)
    pruner = GradualPruner(model, Schedule(final=0.9, end=2 * per_epoch, every=5))
    result = fit(model, digits, FitConfig(epochs=4, lr=0.05, batch_size=64), quiet=True,
                 on_step=lambda x, y: pruner.step(), keep_best=lambda: pruner.done)
    after_schedule = [h["val"] for h in result.history[1:]]  # the schedule ends with epoch 2
    assert result.best_epoch >= 2 and result.best_val == max(after_schedule)
    assert evaluate(model, digits.val) == pytest.approx(result.best_val)
    assert pk.sparsity(model)["global"]["sparsity"] == pytest.approx(0.9, abs=2e-3)  # never rolled back


def test_keep_best_callable_can_pin_an_epoch_that_is_not_the_best(digits):
    torch.manual_seed(0)
    model, epochs_seen = zoo.build("lenet300", in_features=64), []
    only_first = lambda: (epochs_seen.append(1), len(epochs_seen) == 1)[1]  # noqa: E731
    result = fit(model, digits, FitConfig(epochs=3, lr=0.05, batch_size=64), quiet=True, keep_best=only_first)
    vals = [h["val"] for h in result.history]
    assert max(vals[1:]) > vals[0]  # a later epoch was better: it must not be the one kept
    assert result.best_epoch == 1 and evaluate(model, digits.val) == pytest.approx(vals[0])


def test_recalibrate_batchnorm_estimates_the_statistics_the_model_now_sees():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.5)).eval()
    weight = model[0].weight.detach().clone()
    x = torch.randn(500, 4) * 3 + 1
    split = data.Split(x, torch.zeros(500, dtype=torch.long))
    train.recalibrate_batchnorm(model, split, samples=500, batch_size=50)
    with torch.no_grad():
        features = model[0](x)
    torch.testing.assert_close(model[1].running_mean, features.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model[1].running_var, features.var(0), rtol=2e-2, atol=1e-3)
    assert not model.training and model[1].momentum == 0.1 and torch.equal(model[0].weight, weight)
