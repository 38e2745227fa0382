"""The long fuzz campaign (`make fuzz`): N cases of tests/fuzzing.py from one seed, on at most
two worker processes, with progress on stderr and every count in a JSON file.

    python tests/fuzz_campaign.py --cases 100000 --seed 2024 --json docs/results/runs/fuzz.json

Counts per target and seed kind: refused (PruneError), refused_torch (torch's own
load_state_dict refusal of a wrong size or key), equal (accepted and equal to the reference),
wrong, unexpected (an exception not a PruneError), crash and hang, with examples of each finding
and the command that replays it. A crashing case's mutated input is kept under --crashes.
"""
import argparse
import json
from importlib.metadata import version
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_runner  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", default="2024")
    parser.add_argument("--json", default="docs/results/runs/fuzz.json")
    parser.add_argument("--workers", type=int, default=2, choices=(1, 2))
    parser.add_argument("--chunk", type=int, default=2000, help="cases per worker process")
    parser.add_argument("--crashes", default="runs/fuzz-crashes")
    args = parser.parse_args(argv)
    start = time.time()

    def progress(verdicts):
        bad = sum(v["outcome"] in ("wrong", "unexpected", "crash", "hang") for v in verdicts)
        rate = len(verdicts) / max(time.time() - start, 1e-9)
        print(f"{len(verdicts)}/{args.cases} cases, {bad} findings, {rate:.0f} cases/s", file=sys.stderr, flush=True)

    verdicts = fuzz_runner.run(args.cases, args.seed, workers=args.workers, chunk=args.chunk,
                               crash_dir=args.crashes, progress=progress)
    result = fuzz_runner.summary(verdicts, args.seed, time.time() - start)
    result["command"] = "python tests/fuzz_campaign.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result["machine"] = {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
                         "python": platform.python_version(), "torch": version("torch"),
                         "platform": platform.platform()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["totals"]))
    return result


if __name__ == "__main__":
    main()
