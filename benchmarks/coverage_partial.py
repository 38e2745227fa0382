"""The records of an unfinished `structured_coverage.py --jsonl` run as one JSON, marked partial,
for the tables until the run completes (the same command resumes it; its --json then replaces
this file).

    python benchmarks/coverage_partial.py progress.jsonl --suite timm --ratios 0.3,0.5 --total 95 --json out.json
"""
import argparse
import json
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl")
    parser.add_argument("--suite", default="timm")
    parser.add_argument("--ratios", default="0.3,0.5")
    parser.add_argument("--tools", default="prunekit,torch_pruning")
    parser.add_argument("--total", type=int, required=True, help="models the complete run covers")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    records = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line.strip()]
    models = list(dict.fromkeys(r["model"] for r in records))
    Path(args.json).write_text(json.dumps({
        "suite": args.suite, "ratios": [float(r) for r in args.ratios.split(",")], "tools": args.tools.split(","),
        "partial": True, "models_done": len(models), "models_total": args.total, "models": models,
        "records": records}, indent=2))
    print(f"{len(models)} of {args.total} models, {len(records)} records -> {args.json}")


if __name__ == "__main__":
    main()
