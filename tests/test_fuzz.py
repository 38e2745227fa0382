"""The short fuzz suite (tests/fuzzing.py; the long campaign is `make fuzz`): a fixed set of
cases over every target, in child processes. No crash, no hang, no silently wrong decode or
output, no exception but a PruneError; and the mutations are effective: each target has cases
refused and cases accepted and compared."""
import collections
import re
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_reference as ref  # noqa: E402
import fuzz_runner  # noqa: E402
import fuzz_seeds  # noqa: E402
import fuzzing  # noqa: E402
from prunekit.deploy import form_checks  # noqa: E402
from prunekit.serialization import codecs  # noqa: E402

SEED, CASES = "test-fuzz", 320

# Findings whose fix belongs to files outside the fuzzer's (reported with a reproducer to their
# owner, issue 26 item 4): tolerated here by pattern only until fixed; delete each line then.
KNOWN_OPEN = {
    "plan attrs not checked against the weights": r"says \S+ -> .*, its weight is",
    "a stored tensor of an integer dtype for a float weight": r"data set to a tensor that requires gradients",
    "stored tensors of mixed float dtypes: forward fails": r"must have the same dtype",
    "a NaN or inf stored under a mask survives the load": r"NaN or inf at a masked-out position",
    "a replaced bias of the wrong size is run": r"ran with a bias of shape|must match the size of tensor|expanded size",
    "a plan dtype of a non-string type": r"unhashable type",
}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    return fuzz_runner.run(CASES, SEED, workers=2, chunk=CASES // 2, crash_dir=tmp_path_factory.mktemp("crashes"))


def _open_issue(verdict):
    return next((name for name, pattern in KNOWN_OPEN.items() if re.search(pattern, verdict.get("error", ""))), None)


def test_no_crash_no_wrong_result_no_unexpected_exception(verdicts):
    assert len(verdicts) == CASES
    found = [v for v in verdicts if v["outcome"] in ("crash", "hang", "wrong", "unexpected") and not _open_issue(v)]
    assert not found, "\n".join(f"case {v['index']} ({v['target']} {v['key']}, {v['done']}): {v['outcome']}: "
                                f"{v.get('error')}" for v in found[:10])


@pytest.mark.parametrize("target", list(fuzzing.TARGETS))
def test_mutations_are_refused_and_accepted_in_good_measure(verdicts, target):
    """A fuzzer that mutated nothing would have no refusals; one that only broke inputs no
    accepted cases to compare."""
    counts = collections.Counter(v["outcome"] for v in verdicts if v["target"] == target)
    total = sum(counts.values())
    assert total >= CASES // 8
    assert counts["refused"] + counts["refused_torch"] >= 0.3 * total, counts
    assert counts["equal"] >= 0.1 * total, counts


def test_every_form_kernel_and_file_is_fuzzed(verdicts):
    seen = collections.defaultdict(set)
    for v in verdicts:
        seen[v["target"]].add(v["key"])
    assert seen["decode"] >= {form + suffix for form in codecs.FORMS for suffix in ("", "+int8")}
    assert seen["layer"] >= set(fuzz_seeds.LAYER_KERNELS)
    assert len(seen["load"]) == 8


@pytest.fixture(scope="module")
def seeds():
    with tempfile.TemporaryDirectory() as folder:
        yield fuzz_seeds.Seeds(folder)


def test_the_reference_decodes_every_unmutated_seed_as_prunekit_does(seeds):
    """The oracle is not vacuous: the reference accepts every form pk.save writes, and agrees."""
    for key, form, parts, shape, dtype in seeds.decode:
        assert fuzzing.same(ref.checkpoint(form, parts, shape, dtype), codecs.decode(form, parts, shape, dtype)), key


def test_the_oracle_catches_a_decoder_that_skips_its_checks(seeds, monkeypatch):
    """With the delta8 and N:M checks made no-ops, damaged forms reach torch's indexing (bounds
    checked, so no crash here): the fuzzer must report wrong decodes or raw errors."""
    monkeypatch.setattr(form_checks, "check_delta8", lambda *args: None)
    monkeypatch.setattr(form_checks, "check_nm", lambda *args: None)
    picked = [i for i in range(3000) if fuzzing.pick(SEED, i)[1] == "decode"]
    outcomes = collections.Counter(v["outcome"] for v in (fuzzing.run_case(SEED, i, seeds) for i in picked[:160])
                                   if v["key"].startswith(("delta8", "nm")))
    assert outcomes["wrong"] + outcomes["unexpected"] >= 5, outcomes


def test_a_crash_kills_only_its_worker_and_is_pinned(tmp_path, monkeypatch):
    monkeypatch.setenv("FUZZ_CRASH_AT", "2")
    verdicts = fuzz_runner.run(4, SEED, workers=1, chunk=4, crash_dir=tmp_path)
    assert [v["index"] for v in verdicts] == [0, 1, 2, 3]
    assert [v["outcome"] == "crash" for v in verdicts] == [False, False, True, False]
    assert "alone: exit -11" in verdicts[2]["error"] and (tmp_path / f"{SEED}-2" / "stderr.txt").is_file()
