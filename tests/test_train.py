import pytest
import torch

import prunekit as pk
from prunekit import data, train, zoo
from prunekit.train import FitConfig, evaluate, fit


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


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

    real_epoch = train._train_epoch

    def crash_in_third_epoch(model, dataset, optimizer, config, epoch, progress, on_step=None):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(model, dataset, optimizer, config, epoch, progress, on_step)
    crashed = zoo.build("lenet300", in_features=64)
    crashed.load_state_dict(init)
    monkeypatch.setattr(train, "_train_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(crashed, digits, config, checkpoint_dir=tmp_path, quiet=True)
    monkeypatch.setattr(train, "_train_epoch", real_epoch)
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
