"""Runs fuzz cases (tests/fuzzing.py) in child processes, so a crash or a hang kills one worker,
not the run: each worker takes a range of case indices and prints "S <index>" before a case and
"R <json verdict>" after it. A worker that dies or falls silent mid-case has pinned that case:
it is recorded as a crash (or hang), run again alone in a fresh process that saves its mutated
input under the crash folder, and the range goes on from the next case.

Workers run under a 6 GiB address-space limit: a crafted size then fails to allocate at once
(an exception the oracle sees) instead of swapping a shared machine.

    python tests/fuzz_runner.py --seed S --from I --to J [--save DIR]   # replay cases I..J-1
"""
import argparse
import collections
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEMORY = 6 << 30
OUTCOMES = ("refused", "refused_torch", "equal", "wrong", "unexpected", "crash", "hang")


def _limits():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    os.nice(19)


def _lines(proc, out: queue.Queue):
    for line in proc.stdout:
        out.put(line)
    out.put(None)


def _spawn(seed, lo, hi, save=None):
    cmd = [sys.executable, str(HERE / "fuzz_runner.py"), "--seed", str(seed), "--from", str(lo), "--to", str(hi)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen(cmd + (["--save", str(save)] if save else []), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_limits)


def _pass(seed, lo, hi, hang_s):
    """Run cases lo..hi-1 in one worker: (verdicts, index it died on or None, how, stderr tail)."""
    proc = _spawn(seed, lo, hi)
    lines = queue.Queue()
    threading.Thread(target=_lines, args=(proc, lines), daemon=True).start()
    verdicts, current = [], None
    while True:
        try:
            line = lines.get(timeout=hang_s)
        except queue.Empty:
            proc.kill()
            proc.wait()
            return verdicts, current if current is not None else lo, "hang", ""
        if line is None:
            break
        if line.startswith("S "):
            current = int(line[2:])
        elif line.startswith("R "):
            verdicts.append(json.loads(line[2:]))
            current = None
    code = proc.wait()
    err = proc.stderr.read()[-2000:]
    if code == 0 and current is None:
        return verdicts, None, None, ""
    if current is None and not verdicts and lo < hi:
        raise RuntimeError(f"a fuzz worker failed before its first case (exit {code}):\n{err}")
    return verdicts, current if current is not None else lo + len(verdicts), f"exit {code}", err


def run_range(seed, lo, hi, crash_dir, hang_s=120):
    """Verdicts of cases lo..hi-1; a crashing or hanging case is pinned and re-run alone."""
    verdicts = []
    while lo < hi:
        done, died, how, err = _pass(seed, lo, hi, hang_s)
        verdicts += done
        if died is None:
            break
        folder = Path(crash_dir) / f"{seed}-{died}"
        folder.mkdir(parents=True, exist_ok=True)
        alone = _spawn(seed, died, died + 1, save=folder)
        try:
            out, alone_err = alone.communicate(timeout=hang_s)
        except subprocess.TimeoutExpired:
            alone.kill()
            out, alone_err = alone.communicate()
        (folder / "stderr.txt").write_text(err + "\n--- alone ---\n" + alone_err[-2000:])
        verdicts.append({"index": died, "outcome": "hang" if how == "hang" else "crash", "target": None,
                         "key": None, "done": [], "error": f"{how}; alone: exit {alone.returncode}",
                         "saved": str(folder), "stderr": err[-500:]})
        lo = died + 1
    return verdicts


def run(cases, seed, workers=2, chunk=1000, crash_dir=None, start=0, progress=None):
    """Run cases start..start+cases-1 of campaign `seed` on `workers` processes; returns the
    verdicts in index order. `progress(verdicts so far)` is called after each chunk."""
    crash_dir = crash_dir or tempfile.mkdtemp(prefix="fuzz-crashes-")
    ranges = [(lo, min(lo + chunk, start + cases)) for lo in range(start, start + cases, chunk)]
    verdicts, lock = [], threading.Lock()

    def one(bounds):
        found = run_range(seed, *bounds, crash_dir)
        with lock:
            verdicts.extend(found)
            if progress:
                progress(verdicts)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, ranges))
    return sorted(verdicts, key=lambda v: v["index"])


def summary(verdicts, seed, seconds, examples=20) -> dict:
    """Counts per target and seed kind, totals, and examples of every finding (with its replay)."""
    per = collections.defaultdict(collections.Counter)
    totals = collections.Counter()
    found, kinds = collections.defaultdict(list), collections.Counter()
    for v in verdicts:
        outcome = v["outcome"]
        totals[outcome] += 1
        totals["refused_though_valid"] += bool(v.get("valid"))
        per[f"{v['target']}/{v['key']}"][outcome] += 1
        if outcome in ("wrong", "unexpected", "crash", "hang"):  # grouped by message, numbers and names blanked
            kinds[re.sub(r"'[^']*'|\[[^]]*\]|-?\d+", "_", v.get("error", ""))[:120]] += 1
        if outcome in ("wrong", "unexpected", "crash", "hang") and len(found[outcome]) < examples:
            found[outcome].append({**{k: v.get(k) for k in ("target", "key", "done", "error", "saved")},
                                   "replay": f"python tests/fuzz_runner.py --seed {seed} --from {v['index']} "
                                             f"--to {v['index'] + 1}"})
    return {"seed": seed, "cases": len(verdicts), "seconds": round(seconds, 1),
            "totals": {k: totals[k] for k in (*OUTCOMES, "refused_though_valid")},
            "per_target": {k: dict(c) for k, c in sorted(per.items())}, "finding_kinds": dict(kinds.most_common()),
            "findings": dict(found)}


def _save(folder):
    """A keep() that writes a case's mutated input: tensors as safetensors, the rest as JSON."""
    from safetensors.torch import save_file

    def keep(inputs):
        folder.mkdir(parents=True, exist_ok=True)
        if "file" in inputs:
            (folder / "input.safetensors").write_bytes(inputs["file"])
            return
        tensors = inputs.get("parts") or inputs.get("state")
        save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(folder / "input.safetensors"))
        (folder / "input.json").write_text(json.dumps({k: v for k, v in inputs.items() if k not in ("parts", "state")}))
    return keep


def worker(seed, lo, hi, save=None):
    sys.path.insert(0, str(HERE))
    import torch
    import fuzz_seeds
    import fuzzing
    torch.set_num_threads(2)  # the kernels' row split between threads is part of what is tested
    with tempfile.TemporaryDirectory() as folder:
        seeds = fuzz_seeds.Seeds(folder)
        crash_at = os.environ.get("FUZZ_CRASH_AT")  # the test of this runner: a segfault at that case
        for index in range(lo, hi):
            print(f"S {index}", flush=True)
            if crash_at is not None and index == int(crash_at):
                import ctypes
                ctypes.string_at(0)
            verdict = fuzzing.run_case(seed, index, seeds, keep=_save(Path(save)) if save else None)
            print("R " + json.dumps(verdict), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", required=True)
    parser.add_argument("--from", dest="lo", type=int, required=True)
    parser.add_argument("--to", dest="hi", type=int, required=True)
    parser.add_argument("--save", help="write each case's mutated input under this folder")
    args = parser.parse_args()
    worker(args.seed, args.lo, args.hi, args.save)
