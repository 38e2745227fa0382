"""llm.prune across processes (2 CPU ranks on gloo): each rank calibrates on its share of the
sequences, statistics are summed before the masks are chosen, and the result is the one
process's: the same Wanda masks exactly, SparseGPT within fp32 summation order, the same
weights on every rank."""
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llm_helpers import build
from prunekit import llm

BATCHES = torch.randint(3, 200, (6, 32), generator=torch.Generator().manual_seed(4))
CASES = {"wanda": {"method": "wanda"}, "sparsegpt": {"method": "sparsegpt", "pattern": "2:4"},
         "owl": {"method": "wanda", "allocation": "owl", "owl_lambda": 0.02}}


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results = {}
    try:
        for case, kwargs in CASES.items():
            model = build("llama", num_hidden_layers=3)
            report = llm.prune(model, BATCHES, **kwargs)
            state = torch.cat([p.detach().flatten() for p in model.parameters()])
            both = [torch.zeros_like(state) for _ in range(2)]
            dist.all_gather(both, state)
            results[case] = {"states": both, "sparsity": report.sparsity, "calibration": report.calibration}
        folder = Path(out).parent
        report = llm.prune_sharded(folder / "in", folder / "streamed", BATCHES, method="wanda")
        results["streamed"] = {"sparsity": report.sparsity}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Every case pruned by 2 processes (one spawn: each process imports transformers once)."""
    out = tmp_path_factory.mktemp("ranks") / "ranks.pt"
    build("llama", num_hidden_layers=3).save_pretrained(out.parent / "in", max_shard_size="40KB")
    mp.spawn(_worker, args=(29531, str(out)), nprocs=2, join=True)
    return {**torch.load(out), "folder": str(out.parent)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_prune_as_one_process_does(case, two_ranks):
    found = two_ranks[case]
    alone = build("llama", num_hidden_layers=3)
    report = llm.prune(alone, BATCHES, **CASES[case])
    expected = torch.cat([p.detach().flatten() for p in alone.parameters()])
    assert torch.equal(found["states"][0], found["states"][1])  # every rank holds the same model
    assert found["calibration"] == tuple(BATCHES.shape) and found["sparsity"] == pytest.approx(report.sparsity)
    got = found["states"][0]
    assert torch.equal(got == 0, expected == 0) if case != "sparsegpt" else \
        float(((got == 0) != (expected == 0)).float().mean()) < 1e-3
    if case == "sparsegpt":
        assert torch.allclose(got, expected, atol=1e-4)
    else:
        assert torch.equal(got, expected)


def test_two_ranks_stream_the_model_one_process_writes(two_ranks, tmp_path):
    """prune_sharded under two ranks: rank 0 writes the folder the one-process run writes."""
    folder = tmp_path
    alone = llm.prune_sharded(_input(two_ranks), folder / "alone", BATCHES, method="wanda")
    assert two_ranks["streamed"]["sparsity"] == alone.sparsity
    written = type(build("llama")).from_pretrained(_input(two_ranks).parent / "streamed").state_dict()
    expected = type(build("llama")).from_pretrained(folder / "alone").state_dict()
    assert written.keys() == expected.keys() and all(torch.equal(written[k], expected[k]) for k in written)


def _input(results) -> Path:
    return Path(results["folder"]) / "in"


def test_fewer_sequences_than_ranks_is_one_line():
    from prunekit import PruneError
    from prunekit.llm import ranks
    assert torch.equal(ranks.share(BATCHES), BATCHES)  # alone: every sequence
    with pytest.raises(PruneError):
        _share_as(rank=0, world=8)


def _share_as(rank, world):
    from unittest import mock

    from prunekit.llm import ranks
    with mock.patch.object(ranks, "active", return_value=True), mock.patch.object(ranks, "world", return_value=world), \
            mock.patch.object(ranks, "rank", return_value=rank):
        return ranks.share(BATCHES)


def test_torchrun_prunes_through_the_cli_and_rank_zero_writes_what_one_process_writes(tmp_path):
    import subprocess
    import sys

    from llm_helpers import english, tokenizer
    from prunekit import cli
    model = tmp_path / "model"
    build("llama", num_hidden_layers=3).save_pretrained(model)
    tokenizer().save_pretrained(model)
    (tmp_path / "text.txt").write_text(english())
    flags = ["llm", "prune", "--model", str(model), "--calibration", str(tmp_path / "text.txt"), "--sequences", "4",
             "--seq-len", "32", "--method", "sparsegpt", "--quiet", "--out"]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29541", "-m", "prunekit",
                           *flags, str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    cli.main([*flags, str(tmp_path / "one")])
    two = type(build("llama")).from_pretrained(tmp_path / "two").state_dict()
    one = type(build("llama")).from_pretrained(tmp_path / "one").state_dict()
    assert two.keys() == one.keys()
    assert all(torch.equal(two[k] == 0, one[k] == 0) and torch.allclose(two[k], one[k], atol=1e-4) for k in one)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left
