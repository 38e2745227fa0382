"""A failing llm.prune puts the model back without a second copy of the model in memory: past a
memory budget the originals go to a temporary file block by block, and come back from it."""
import copy

import pytest
import torch

from llm_helpers import build
from prunekit import PruneError, llm
from prunekit.llm import rollback
from prunekit.llm.layers import block_layers

BATCHES = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))


def test_past_the_budget_the_originals_are_on_disk_and_restored_exactly(tmp_path):
    weights = [torch.randn(8, 8), torch.randn(4, 16).bfloat16(), torch.randn(3, 5)]
    originals = [w.clone() for w in weights]
    saved = rollback.Rollback(memory_bytes=8 * 8 * 4)  # the first fits in memory, the others spill
    for w in weights:
        saved.keep(w)
    saved.flush()
    assert len(saved.copies) == 1 and len(saved.files) == 1 and saved.files[0].is_file()
    for w in weights:
        w.zero_()
    saved.restore()
    assert all(torch.equal(w, o) and w.dtype == o.dtype for w, o in zip(weights, originals))
    folder = saved.folder
    saved.close()
    assert not folder.exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_failure_in_a_late_block_restores_the_model_from_disk(monkeypatch, dtype):
    model = build("llama", num_hidden_layers=3).to(dtype)
    before = copy.deepcopy(model.state_dict())
    monkeypatch.setattr(rollback, "MEMORY_BYTES", 0)  # nothing kept in memory: every original spills
    made, calls = [], []
    original_init = rollback.Rollback.__init__

    def noting(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        made.append(self)
    monkeypatch.setattr(rollback.Rollback, "__init__", noting)

    def fail_in_the_third_block(weight, hessian, sparsity, pattern=None):
        calls.append(1)
        if len(calls) > 2 * len(block_layers(model.model.layers[0])):
            assert not made[0].copies and len(made[0].files) == 2  # blocks 0 and 1, on disk only
            raise PruneError("boom")
        return weight * 0

    monkeypatch.setattr("prunekit.llm.methods.sparsegpt", fail_in_the_third_block)
    with pytest.raises(PruneError, match="boom"):
        llm.prune(model, BATCHES, method="sparsegpt")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert made[0].folder is None  # the temporary files are gone


def test_a_successful_prune_leaves_no_temporary_files(monkeypatch, tmp_path):
    monkeypatch.setattr(rollback, "MEMORY_BYTES", 0)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    llm.prune(build("llama"), BATCHES, method="wanda")
    assert list(tmp_path.iterdir()) == []
