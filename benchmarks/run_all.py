"""`make bench`: every benchmark, side by side, figures written to runs/bench/*.json.

Each script prints its own table. To publish a run, move its JSON (and log) into
docs/results/runs/<benchmark>/ (the script's name, "_" as "-"), note its command, commit,
versions and seeds in that folder's README.md, and run `python benchmarks/tables.py`: the
tables of the README and docs/results/ are generated from those JSON files only.
"""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
OUT = Path("runs/bench")

BENCHMARKS = [
    ("global_threshold.py", ["--sizes", "10M,100M,1B"]),
    ("han2015_lenet300.py", []),
    ("slimming_mlp.py", ["--finetune", "30"]),
    ("structured_coverage.py", ["--ratios", "0.3,0.5", "--max-rss", "12G"]),
    ("structured_timing.py", ["--repeats", "5", "--threads", "1", "--dtype", "bfloat16"]),
    ("realized_speedup.py", ["--batches", "1,32", "--repeats", "10", "--warmup", "3",
                             "--threads", "1", "--forms", "eager,frozen,onnxruntime,openvino", "--round-tos", "1,8,16"]),
    ("lottery_tickets.py", []),
    ("gradual_vs_oneshot.py", []),
    ("lenet300_50x.py", []),
    ("search_vs_uniform.py", ["--epochs", "10", "--finetune", "2", "--recover", "5000"]),
    ("search_latency.py", []),
    ("speedup_bound.py", ["--threads", "1"]),
    ("pretrained_agreement.py", []),
    ("llm_table.py", ["--n", "16", "--eval-tokens", "16384"]),
    ("llm_stream.py", []),
    ("llm_ranks.py", ["--n", "16", "--repeats", "2"]),
    ("llm_8b.py", []),  # writes a 16 GB model under $PRUNEKIT_HOME once; hours on 2 cores
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    failed = []
    for script, args in BENCHMARKS:
        print(f"\n=== {script} ===", flush=True)
        target = OUT / script.replace(".py", ".json")
        code = subprocess.call([sys.executable, str(HERE / script), *args, "--json", str(target)])
        if code:  # its own message, above, says which row and why
            failed.append(f"{script} (exit {code})")
            print(f"=== {script} failed: exit {code}", file=sys.stderr, flush=True)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
