"""Realized CPU speedup of structured pruning: measured latency gain / MACs reduction.

ResNet-50 (torchvision) and EfficientNet-Lite0 (timm `tf_efficientnet_lite0`), or any
"ultralytics:CFG" YOLO (built from its config, 320x320 input; run it with --no-tp), random init,
eval mode, 50 % of the channels removed (--ratio) by prunekit with round_to=1 and round_to=8,
and, side by side, by Torch-Pruning 1.6.1 (BasePruner, GroupMagnitudeImportance(p=2), the
classifier ignored, round_to None and 8). Every variant is timed with
prunekit.measure.latency.time_models in one interleaved loop per batch size (1 and 32,
224x224) and form, fixed thread count (default: all cores), median of --repeats. Forms
(--forms): "eager", the nn.Module as it is, and "frozen", the way a CPU deployment runs it:
torch.jit.trace + freeze + optimize_for_inference (BatchNorm folded into the convs, oneDNN
weight prepacking); a third, "onnxruntime", runs each model's ONNX export in an ONNX
Runtime CPU session, and a fourth, "openvino", runs it in OpenVINO's CPU plugin compiled for
latency (both: pip install -e '.[bench]'). Dense and pruned models are always timed in
the same form. For each pruned model:

    efficiency = (dense latency / pruned latency) / (dense MACs / pruned MACs)

MACs from prunekit.measure.macs (Conv/Linear layers). 1.0 means the latency fell exactly as
much as the MACs did; the goal is >= 0.85. Channel counts that are not multiples of 8 can
hurt CPU kernels: the round_to=8 rows show whether they do. --keep-streams adds, for
EfficientNet-Lite0, "pk wide" rows: the same number of channels removed in all, but only
from the wide expanded layers, the narrow residual streams kept (a common recipe for
inverted-residual nets); they cut fewer MACs, so their efficiency is not comparable as a
speedup: compare the milliseconds.

    python benchmarks/realized_speedup.py [--models resnet50,tf_efficientnet_lite0]
        [--batches 1,32] [--ratio 0.5] [--repeats 30] [--warmup 5] [--threads N] [--no-tp]
        [--round-tos 1,8] [--forms eager,frozen,onnxruntime,openvino] [--keep-streams]
        [--json out.json]
"""
import argparse
import copy
import functools
import json
import os
import re
import warnings
from pathlib import Path

MODELS = ("resnet50", "tf_efficientnet_lite0")
GOAL = 0.85


def build(name):
    import torch
    torch.manual_seed(0)
    if name.startswith("ultralytics:"):  # a YOLO built from its config, no weights
        from prunekit.serialization.sources import load_model
        return load_model(name).eval()
    if name == "tf_efficientnet_lite0":
        import timm
        return timm.create_model(name, pretrained=False).eval()
    import torchvision
    return torchvision.models.get_model(name, weights=None).eval()


def classifier(model):
    return model.fc if hasattr(model, "fc") else model.get_classifier()


def prune_prunekit(model, x, ratio, round_to):
    import prunekit as pk
    pk.prune_structured(model, (x,), ratio=ratio, round_to=round_to)


def prune_torch_pruning(model, x, ratio, round_to):
    import torch_pruning as tp
    tp.pruner.BasePruner(model, (x,), importance=tp.importance.GroupMagnitudeImportance(p=2),
                         pruning_ratio=ratio, ignored_layers=[classifier(model)],
                         round_to=None if round_to == 1 else round_to).step()


# Spaces that carry an inverted-residual block's narrow output (the residual stream), by model
STREAMS = {"tf_efficientnet_lite0": r".*conv_pwl|blocks\.0\.0\.conv_pw"}


def prune_wide_only(model, x, ratio, round_to, streams):
    """Keep the spaces matching `streams`; take from the others the ratio that removes the same
    number of channels in all as `ratio` of every space would."""
    import prunekit as pk
    from prunekit.structured import channel_spaces
    counts = channel_spaces(model, (x,))  # each space is named after its producing layer
    total = sum(counts.values())
    wide = sum(n for name, n in counts.items() if not re.fullmatch(streams, name))
    pk.prune_structured(model, (x,), ratio=min(1.0, ratio * total / wide), round_to=round_to,
                        overrides={streams: 0.0})


def variants(use_tp, round_tos=(1, 8), streams=None):
    """(label, pruning function, round_to)."""
    out = [(f"prunekit r{r}", prune_prunekit, r) for r in round_tos]
    if streams:
        wide_only = functools.partial(prune_wide_only, streams=streams)
        out += [(f"pk wide r{r}", wide_only, r) for r in round_tos]
    if use_tp:
        out += [(f"TP r{r}", prune_torch_pruning, r) for r in round_tos]
    return out


def _macs(model, x):
    from prunekit.measure.macs import layer_stats, totals
    return totals(layer_stats(model, (x,)))["macs"]


def _first_line(err):
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def image_size(name):
    return 320 if name.startswith("ultralytics:") and not name.endswith("-cls.yaml") else 224


def output_shapes(model, x):
    import torch

    from prunekit._utils.inputs import tensors_of
    with torch.no_grad():
        return [t.shape for t in tensors_of(model(x))]


def measure(name, args):
    import torch
    dense, size = build(name), image_size(name)
    x1 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    models = {"dense": dense}
    info = {"dense": {"params": sum(p.numel() for p in dense.parameters()), "macs": _macs(dense, x1)}}
    streams = STREAMS.get(name) if args.keep_streams else None
    for label, prune, round_to in variants(args.tp, args.round_tos, streams):
        model = copy.deepcopy(dense)
        try:
            prune(model, x1, args.ratio, round_to)
            if output_shapes(model, x1) != output_shapes(dense, x1):
                raise RuntimeError("output shape changed")
        except Exception as err:  # noqa: BLE001 - a tool failing is a result
            info[label] = {"error": _first_line(err)}
            continue
        models[label] = model
        channels = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        info[label] = {"params": sum(p.numel() for p in model.parameters()), "macs": _macs(model, x1),
                       "convs_not_multiple_of_8": sum(c % 8 != 0 for c in channels),
                       "convs": len(channels)}
    rows = []
    for batch in args.batches:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))
        for form in args.forms:
            rows += _time_form(name, form, batch, models, info, x, args)
    return rows


def deployed(model, x, form, threads):
    """The model as it would be run: "eager" as is; "frozen" traced, frozen and passed through
    torch.jit.optimize_for_inference (BatchNorm folded into the convs, weights prepacked);
    "onnxruntime" / "openvino" exported to ONNX and run by that runtime's CPU inference
    (all graph optimisations, `threads` threads, one stream)."""
    import torch
    if form == "eager":
        return model
    if form in RUNTIMES:
        return _checked(_as_module(RUNTIMES[form](_onnx_bytes(model, x), threads)), model, x, form)
    with torch.no_grad():
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model.eval(), x)))


def _onnx_bytes(model, x):
    import io

    import torch
    buffer = io.BytesIO()
    torch.onnx.export(model.eval(), (x,), buffer, dynamo=False, input_names=["x"], opset_version=17)
    return buffer.getvalue()


def _onnxruntime(onnx, threads):
    """A function numpy input -> numpy output: an ONNX Runtime CPU session."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    return lambda inputs: session.run(None, {"x": inputs})[0]


def _openvino(onnx, threads):
    """The same through OpenVINO's CPU plugin, compiled for latency (one stream)."""
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(core.read_model(onnx), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    return lambda inputs: compiled(inputs)[0]


RUNTIMES = {"onnxruntime": _onnxruntime, "openvino": _openvino}


def _as_module(run):
    """An nn.Module (for time_models) around a numpy -> numpy inference function."""
    import torch

    class Runtime(torch.nn.Module):
        def forward(self, inputs):
            return torch.from_numpy(run(inputs.numpy()))
    return Runtime()


def _checked(ported, model, x, form):
    """`ported` if it computes what `model` does on `x`; a one-line error otherwise."""
    import torch
    with torch.no_grad():
        expected = model(x)
    if not torch.allclose(ported(x), expected, atol=1e-4 * expected.abs().max().item(), rtol=1e-3):
        raise RuntimeError(f"the {form} model disagrees with the PyTorch model")
    return ported


def _time_form(name, form, batch, models, info, x, args):
    from prunekit.measure.latency import time_models
    ready = {label: deployed(model, x, form, args.threads) for label, model in models.items()}
    timing = time_models(ready, (x,), repeats=args.repeats, warmup=args.warmup, threads=args.threads)
    rows = []
    for label in info:
        row = {"model": name, "batch": batch, "form": form, "variant": label, **info[label]}
        if label in timing:
            row["latency"] = timing[label]
            if label != "dense":
                speedup = timing["dense"]["median_s"] / timing[label]["median_s"]
                macs_ratio = info["dense"]["macs"] / info[label]["macs"]
                row.update(speedup=speedup, macs_ratio=macs_ratio, efficiency=speedup / macs_ratio)
        rows.append(row)
        print_row(row)
    return rows


def _fmt(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def print_row(r):
    if "error" in r:
        print(f"{r['model']:>22} {r['batch']:>5} {r['form']:>6} {r['variant']:>12}  failed: {r['error']}",
              flush=True)
        return
    lat = r["latency"]
    spread = f"[{lat['p25_s'] * 1e3:.1f}, {lat['p75_s'] * 1e3:.1f}]"
    odd = f"{r['convs_not_multiple_of_8']}/{r['convs']}" if "convs" in r else "-"
    print(f"{r['model']:>22} {r['batch']:>5} {r['form']:>6} {r['variant']:>12} {r['params'] / 1e6:7.2f}M "
          f"{r['macs'] / 1e6:9.1f}M {lat['median_s'] * 1e3:9.1f} {spread:>17} "
          f"{_fmt(r.get('macs_ratio')):>6} {_fmt(r.get('speedup')):>7} {_fmt(r.get('efficiency')):>6} "
          f"{odd:>7}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="default: all cores")
    parser.add_argument("--tp", action=argparse.BooleanOptionalAction, default=True,
                        help="also time Torch-Pruning's pruned models")
    parser.add_argument("--forms", default="eager,frozen", help="eager, frozen (TorchScript, "
                        "optimize_for_inference), onnxruntime and/or openvino: dense and pruned are timed in the "
                        "same form")
    parser.add_argument("--round-tos", default="1,8", help="round_to values to prune with")
    parser.add_argument("--keep-streams", action="store_true", help="also prune only the wide "
                        "(expanded) channels of inverted-residual models, as many channels in all")
    parser.add_argument("--json")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.round_tos = [int(r) for r in args.round_tos.split(",")]
    args.forms = [f for f in args.forms.split(",") if f]
    unknown = sorted(set(args.forms) - {"eager", "frozen", *RUNTIMES})
    if unknown:
        parser.error(f"unknown form(s) {', '.join(unknown)}: use eager, frozen, onnxruntime, openvino")
    names = [n for n in args.models.split(",") if n]
    warnings.filterwarnings("ignore")
    print(f"ratio {args.ratio}, {args.threads} threads, median of {args.repeats} (interleaved); "
          f"efficiency = latency speedup / MACs ratio, goal >= {GOAL}")
    print(f"{'model':>22} {'batch':>5} {'form':>6} {'variant':>12} {'params':>8} {'MACs/img':>10} {'ms':>9} "
          f"{'[p25, p75] ms':>17} {'MACs x':>6} {'speed x':>7} {'eff.':>6} {'odd ch':>7}")
    rows = []
    for name in names:
        rows += measure(name, args)
    effs = [r for r in rows if r.get("efficiency") is not None]
    if effs:
        print()
        for r in effs:
            verdict = "ok" if r["efficiency"] >= GOAL else "below goal"
            print(f"{r['model']} batch {r['batch']} {r['form']} {r['variant']}: efficiency {r['efficiency']:.2f} ({verdict})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "ratio": args.ratio, "threads": args.threads, "repeats": args.repeats,
            "warmup": args.warmup, "forms": args.forms, "goal": GOAL, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
