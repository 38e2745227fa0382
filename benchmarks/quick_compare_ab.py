"""One `prunekit compare --quick` run, printed as one line per row: run it from two trees side by
side (same load, same moment) to check that a refactor changes neither the figures nor the time.

    git worktree add /tmp/old <commit>
    OMP_NUM_THREADS=1 PRUNEKIT_HOME=/tmp/ab-old PYTHONPATH=/tmp/old/src python benchmarks/quick_compare_ab.py /tmp/ab-old &
    OMP_NUM_THREADS=1 PRUNEKIT_HOME=/tmp/ab-new python benchmarks/quick_compare_ab.py /tmp/ab-new
(each PRUNEKIT_HOME needs mnist fetched: prunekit data fetch mnist)
"""
import json
import sys
import time

from prunekit.cli import main


def run(out: str) -> None:
    start = time.time()
    code = main(["compare", "--quick", "--out", f"{out}/run", "--json", f"{out}/q.json", "--quiet"])
    print("exit", code, "total_s", round(time.time() - start, 1))
    for row in json.load(open(f"{out}/q.json"))["runs"]:
        print(row["method"], row["target_sparsity"], round(row["accuracy"], 4), round(row["speedup"], 2))


if __name__ == "__main__":
    run(sys.argv[1])
