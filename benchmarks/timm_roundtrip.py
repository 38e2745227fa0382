"""Structured prune -> pk.save -> pk.load round trip on a random draw of timm models.

For each model (timm.list_models(), pretrained=False, num_classes=10, random init, seed 0,
eval mode): the input is 1x3xSxS at --size pixels (default 96) if the model runs on it as
built, else with img_size=S passed to timm.create_model, else at its pretrained_cfg
["input_size"]; a model whose dense forward fails on all three is "skipped". Then:

  1. pk.prune_structured(model, (x,), ratio=--ratio)             prune: ok / "<Type>: <message>"
  2. pk.save(model, tmp)                                         save
  3. pk.load(tmp, model=<a fresh timm model, same name and kwargs>)  load
  4. the pruned and the reloaded model on x (eval, no_grad):     equal (torch.allclose,
     rtol=1e-5, atol=1e-6) and max_diff

An error that is not a PruneError is a prunekit bug; `where` names the innermost prunekit frame.
Models over --max-params parameters (counted on the meta device, nothing allocated) are
"skipped" before building. Each model runs in its own process (benchmarks/_coverage_run.py:
one thread, killed past --timeout seconds or --max-rss resident) and the JSON is rewritten
after every model, so a long sweep can be read while it runs.

    nice -n 19 .venv/bin/python benchmarks/timm_roundtrip.py [--models a,b | --limit 200 --seed 0]
        [--ratio 0.3] [--size 96] [--max-params 60M] [--timeout 300] [--max-rss 4G]
        [--json docs/results/runs/timm_roundtrip.json]
"""
import argparse
import json
import random
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import _coverage_timm as timm_suite
from _coverage_run import _parse_size, run_tool

KWARGS = {"num_classes": 10}
STAGES = ("prune", "save", "load", "mismatch")


# ---------------------------------------------------------------- child: one model

def _error(err):
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:400]


def _where(err):
    """The innermost prunekit frame of err's traceback (file:line function), or None."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "prunekit" in f.filename]
    if not frames:
        return None
    f = frames[-1]
    return f"{f.filename.split('src/')[-1]}:{f.lineno} {f.name}"


def _outputs(model, x):
    import torch
    model.eval()
    with torch.no_grad():
        out = model(x)
    return [t for t in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(t, torch.Tensor)]


def _runs(model, x):
    try:
        _outputs(model, x)
        return True
    except Exception:  # noqa: BLE001 - this input does not fit the model; the next one is tried
        return False


def model_and_input(name, size):
    """(model, input, build kwargs): --size px as built, then with img_size, then the default."""
    model = timm_suite.build(name, **KWARGS)
    x = timm_suite.example_input(model, size=size)
    if _runs(model, x):
        return model, x, dict(KWARGS)
    try:
        sized = timm_suite.build(name, img_size=size, **KWARGS)
        if _runs(sized, x):
            return sized, x, dict(KWARGS, img_size=size)
    except Exception:  # noqa: BLE001 - the model takes no img_size
        pass
    x = timm_suite.example_input(model)
    if _runs(model, x):
        return model, x, dict(KWARGS)
    return None, None, None


def roundtrip(name, ratio, size):
    """The record of one model: what each stage gave."""
    import torch

    import prunekit as pk
    record = {"model": name, "ratio": ratio, "status": "ok"}
    model, x, kwargs = model_and_input(name, size)
    if model is None:
        return dict(record, status="skipped", error="the dense model runs on none of the inputs tried")
    record.update(input=list(x.shape), kwargs=kwargs, params=sum(p.numel() for p in model.parameters()))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pruned.safetensors"
        steps = (("prune", lambda: pk.prune_structured(model, (x,), ratio=ratio)),
                 ("save", lambda: pk.save(model, path)),
                 ("load", lambda: pk.load(path, model=timm_suite.build(name, **kwargs))))
        for stage, step in steps:
            try:
                result = step()
                record[stage] = "ok"
            except Exception as err:  # noqa: BLE001 - recorded: the point of the sweep
                record.update({stage: _error(err), "status": stage, "where": _where(err)})
                record["bug"] = not isinstance(err, pk.PruneError)
                break
        else:
            mine, theirs = _outputs(model, x), _outputs(result, x)
            same_shapes = [a.shape for a in mine] == [b.shape for b in theirs]
            diff = max(((a - b).abs().max().item() for a, b in zip(mine, theirs)), default=0.0) if same_shapes else None
            record["equal"] = same_shapes and all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(mine, theirs))
            record["max_diff"] = diff
            record["params_after"] = sum(p.numel() for p in model.parameters())
            if not record["equal"]:
                record["status"] = "mismatch"
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def child(name, task, tool, ratios, out_path, threads):
    """The protocol of _coverage_run.run_tool; `task` is "timm:<size>"."""
    import torch
    torch.set_num_threads(int(threads) or 1)
    warnings.simplefilter("ignore")
    record = roundtrip(name, float(ratios), int(task.split(":")[1]))
    record.update(task=task, tool=tool)
    with open(out_path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- parent: the sweep

def select(args):
    import timm
    if args.models:
        return [timm_suite.PREFIX + m.removeprefix(timm_suite.PREFIX) for m in args.models.split(",")]
    names = sorted(timm.list_models())
    return [timm_suite.PREFIX + n for n in random.Random(args.seed).sample(names, min(args.limit, len(names)))]


def summary(records):
    counts = {"tried": len(records)}
    for status in ("ok", "skipped", "timeout", "error") + STAGES:
        counts[status] = sum(r["status"] == status for r in records)
    counts["bugs"] = sum(bool(r.get("bug")) for r in records)
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="comma-separated timm names (default: a seeded random draw)")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--max-params", default="60M")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--max-rss", default="4G")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    max_params, max_rss = _parse_size(args.max_params), _parse_size(args.max_rss)
    records = []
    for name in select(args):
        params = timm_suite.param_count(name, **KWARGS)
        if params is not None and params > max_params:
            record = {"model": name, "status": "skipped", "error": f"{params / 1e6:.0f}M parameters"}
        else:
            record = run_tool(__file__, name, f"timm:{args.size}", "prunekit", [args.ratio],
                              args.timeout, 1, max_rss)[0]
        records.append(record)
        detail = record.get(record["status"]) if record["status"] in STAGES[:3] else record.get("error", "")
        print(f"{name:55s} {record['status']:8s} {record.get('seconds')!s:>7s}  {detail or ''}"[:250], flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"summary": summary(records), "records": records}, indent=1))
    print(json.dumps(summary(records)))


if __name__ == "__main__":
    sys.exit(main())
