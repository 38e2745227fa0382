"""Structured-pruning coverage: prunekit vs Torch-Pruning 1.6.1 on torchvision, timm and YOLO models.

Models: every classification model in `torchvision.models.list_models(module=torchvision.models)`,
plus every detection and segmentation model (`torchvision.models.detection` / `.segmentation`),
random init (weights=None, weights_backbone=None), eval mode, torch.manual_seed(0) so both tools
see the same weights. Inputs: 1x3x224x224 (299 for inception_v3); detection: one 3x320x320 image,
passed as a 1x3x320x320 batch (torchvision's detectors iterate over it like over a list; prunekit
only takes tensors), RCNN score_thresh set to 0 so the box/mask/keypoint heads run on detections
(at the default 0.05 a random-init detector returns none and those heads would never run).
googlenet and inception_v3 are built with aux_logits=False (as Torch-Pruning's examples do):
their aux heads only run in train mode, so neither tool's eval-mode trace would see them.

timm (--suite timm; benchmarks/_coverage_timm.py): one model of every module in
timm.list_modules() (timm 1.0.31): the one with the fewest parameters at its default configuration
(counted on the meta device; ties by name), named "timm/<name>", pretrained=False, eval mode,
torch.manual_seed(0); input 1x3xHxW at its pretrained_cfg["input_size"] (train check: a batch of 2).
A model whose dense forward or train-mode forward fails on that input is "skipped" with the reason
(it needs inputs the benchmark cannot give); one over --max-params is listed as skipped too.

YOLO (--suite yolo; benchmarks/_coverage_yolo.py): Ultralytics' nano config of every family and
task (YOLOv5u, v8, v10, 11; detect, seg, pose, obb, cls), built from the config with no weights,
input 1x3x320x320 (cls 224); checked as classification models are (eval and train structure).
Torch-Pruning ignores the whole head, as its YOLOv8 example does.

For each model, ratio and tool, a fresh copy is pruned; the tool "prunes correctly" when:
  1. the pruning call does not raise;
  2. the pruned model runs forward in eval mode on the example input and its outputs have the
     dense model's structure and shapes (detection: the same keys in each output dict);
  3. classification and segmentation: in train mode, on a batch of 2, forward + backward of the
     sum of all outputs runs and the output shapes match the dense model's (train mode);
  4. it has fewer parameters AND fewer MACs than the dense model (MACs:
     prunekit.measure.macs, Conv/Linear layers only; `flop_macs` in the JSON is a second count
     from torch.utils.flop_counter, which also sees attention matmuls and MHA's in_proj).
Status per tool: "ok", "error" (message: "<stage>: <first line>"), "no reduction", "timeout" or
"skipped" (the dense model does not run on the input given).
Times are the wall time of the whole pruning call: analysis + choice + surgery (prunekit's
includes its own check forward), Torch-Pruning's BasePruner construction + step() + fixups.

prunekit: pk.prune_structured(model, (x,), ratio=r), all defaults (output layers are found and
kept by prunekit itself). Torch-Pruning: tp.pruner.BasePruner with
tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=r, local (per-layer) pruning,
ignored_layers = every Conv/Linear producing the output channels (out features == the output's
channel count: the 1000-way classifier, the segmentation classifiers), for detection the ignore
lists of Torch-Pruning's own torchvision examples (box/class predictors, SSD head, FPN and ROI
heads of Faster R-CNN, ...); num_heads for every attention module ({nn.MultiheadAttention:
num_heads}, {attn.qkv: num_heads} for Swin, {attn.to_qkv: n_heads} for MaxViT; head dims pruned,
as its ViT examples do; timm: {attn.qkv: num_heads} for every module with a `qkv` Linear and an int
`num_heads`); after step(), VisionTransformer.hidden_dim is updated as its torchvision example
does, and timm attention's head_dim = qkv.out_features // (3 num_heads) as its timm example does. Each (model, tool) runs in its own process with a timeout.

    python benchmarks/structured_coverage.py [--suite torchvision|timm|yolo|all] [--ratios 0.3,0.5]
        [--models resnet18,vit_b_16,timm/test_vit]
        [--max-params 200M] [--no-include-detection] [--no-include-segmentation]
        [--tools prunekit,torch_pruning] [--timeout 300] [--max-rss 16G] [--threads N]
        [--json out.json] [--jsonl progress.jsonl]
"""
import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import _coverage_timm as timm_suite
import _coverage_yolo as yolo_suite
from _coverage_report import print_row, summary
from _coverage_run import _mem_total, _parse_size, run_tool

TOOLS = ("prunekit", "torch_pruning")
# Torch-Pruning's torchvision examples (examples/torchvision_models/torchvision_pruning.py,
# benchmarks/prunability/torchvision_pruning.py): output convs and the parts it leaves alone.
TP_DETECTION_IGNORE = {
    "fasterrcnn": ["rpn.head.cls_logits", "rpn.head.bbox_pred", "backbone.fpn", "roi_heads"],
    "maskrcnn": ["rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor",
                 "roi_heads.mask_predictor"],
    "keypointrcnn": ["rpn.head.cls_logits", "rpn.head.bbox_pred", "backbone.fpn.layer_blocks",
                     "roi_heads.box_head", "roi_heads.box_predictor", "roi_heads.keypoint_predictor"],
    "retinanet": ["head.classification_head.cls_logits", "head.regression_head.bbox_reg"],
    "fcos": ["head.classification_head.cls_logits", "head.regression_head.bbox_reg",
             "head.regression_head.bbox_ctrness"],
    "ssd": ["head"],
}


# ---------------------------------------------------------------- models and inputs

def catalogue(detection=True, segmentation=True):
    """{name: task} of the torchvision models to run."""
    from torchvision import models
    tasks = {name: "classification" for name in models.list_models(module=models)}
    if detection:
        tasks.update({name: "detection" for name in models.list_models(module=models.detection)})
    if segmentation:
        tasks.update({name: "segmentation" for name in models.list_models(module=models.segmentation)})
    return tasks


def build(name, task):
    import torch
    import torchvision
    if task == "timm":
        return timm_suite.build(name)
    if task == "yolo":
        return yolo_suite.build(name)
    kwargs = {"weights": None}
    if task in ("detection", "segmentation"):
        kwargs["weights_backbone"] = None  # the default would download ImageNet weights
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, **kwargs)
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is not None:
        roi_heads.score_thresh = 0.0
    return model.eval()


def count_params_meta(name, task):
    """Parameter count without allocating (meta device); None if the model will not build there."""
    import torch
    if task == "timm":
        return timm_suite.param_count(name)
    if task == "yolo":
        return None  # nano models: all kept
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build(name, task)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - some inits may not run on meta: then the model is kept
        return None


def example_input(name, task, batch=1, model=None):
    import torch
    if task == "timm":
        return timm_suite.example_input(model, batch)
    if task == "yolo":
        return yolo_suite.example_input(name, batch)
    generator = torch.Generator().manual_seed(1)
    if task == "detection":
        return torch.rand(batch, 3, 320, 320, generator=generator)
    size = 299 if name == "inception_v3" else 224
    return torch.randn(batch, 3, size, size, generator=generator)


# ---------------------------------------------------------------- checks

def flatten(out):
    import torch
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten(v)]
    return []


def structure(out, task):
    """What must not change: shapes (classification, segmentation) or dict keys (detection)."""
    import torch
    if task == "detection":
        return [sorted(d) for d in out]
    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, dict):
        return {k: structure(v, task) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [structure(v, task) for v in out]
    return type(out).__name__


def output_channels(out):
    """Channel count (dim 1) of the main output: classifier width, segmentation classes."""
    if isinstance(out, dict):
        out = out.get("out", next(iter(out.values())))
    return int(out.shape[1]) if out.dim() > 1 else int(out.shape[0])


def eval_forward(model, x, task):
    """(output structure, flop_macs, macs) of one eval forward, no_grad."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from prunekit.measure.macs import layer_stats, totals
    model.eval()
    with torch.no_grad():
        try:
            counter = FlopCounterMode(display=False)
            with counter:
                out = model(x)
            flop_macs = counter.get_total_flops() // 2
        except AssertionError:  # its module tracker trips on some models (timm cait): no second count
            out, flop_macs = model(x), None
        macs = totals(layer_stats(model, (x,)))["macs"]
    return structure(out, task), flop_macs, macs


def train_forward_backward(model, x, task):
    """Output structure of a train-mode forward; backward of the sum of the outputs."""
    model.train()
    try:
        out = model(x)
        loss = sum(t.float().sum() for t in flatten(out) if t.is_floating_point())
        loss.backward()
        return structure(out, task)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def dense_train_structure(model, x, task):
    """Train-mode output structure of the dense model, leaving its BN running stats unchanged."""
    import torch
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    try:
        model.train()
        with torch.no_grad():
            return structure(model(x), task)
    finally:
        model.eval()
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])


# ---------------------------------------------------------------- the two tools

def run_prunekit(model, x, ratio, name, task, out_channels):
    import prunekit as pk
    result = pk.prune_structured(model, (x,), ratio=ratio)
    return {"kept_fixed": len(result.kept_fixed), "kept_fixed_ops": result.kept_fixed[:10]}


def tp_ignored_layers(model, name, task, out_channels):
    """The output layers Torch-Pruning must leave alone (it does not find them itself)."""
    from torch import nn
    if task == "yolo":
        return yolo_suite.tp_ignored_layers(model)
    if task == "detection":
        family = next(f for f in TP_DETECTION_IGNORE if name.startswith(f))
        return [model.get_submodule(path) for path in TP_DETECTION_IGNORE[family]]
    ignored = []
    for module in model.modules():
        width = module.out_features if isinstance(module, nn.Linear) else \
            module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else None
        if width == out_channels:
            ignored.append(module)
    return ignored


def tp_num_heads(model):
    """{module: heads} for Torch-Pruning's attention handling."""
    from torch import nn
    heads = {}
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            heads[module] = module.num_heads
        elif isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads"):
            heads[module.qkv] = module.num_heads  # Swin ShiftedWindowAttention(V2)
        elif isinstance(getattr(module, "to_qkv", None), nn.Linear) and hasattr(module, "n_heads"):
            heads[module.to_qkv] = module.n_heads  # MaxViT RelativePositionalMultiHeadAttention
    return heads


def tp_fixups(model):
    """Attributes Torch-Pruning's torchvision and timm examples update by hand after pruning."""
    from torchvision.models.vision_transformer import VisionTransformer
    if isinstance(model, VisionTransformer):
        model.hidden_dim = model.conv_proj.out_channels
    timm_suite.tp_fixups(model)


def run_torch_pruning(model, x, ratio, name, task, out_channels):
    import torch_pruning as tp
    pruner = tp.pruner.BasePruner(
        model, (x,), importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
        global_pruning=False, ignored_layers=tp_ignored_layers(model, name, task, out_channels),
        num_heads=tp_num_heads(model))
    pruner.step()
    tp_fixups(model)
    return {}


RUNNERS = {"prunekit": run_prunekit, "torch_pruning": run_torch_pruning}


# ---------------------------------------------------------------- child: one model, one tool

def _first_line(err):
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def dense_reference(template, name, task):
    """What the pruned model is held to: (x, x_train, dense eval structure, flop_macs, macs,
    output channels, train structure)."""
    import torch
    x = example_input(name, task, model=template)
    x_train = example_input(name, task, batch=2, model=template)
    dense_struct, dense_flops, dense_macs = eval_forward(template, x, task)
    with torch.no_grad():
        out_channels = output_channels(flatten(template(x))[0]) if task != "detection" else None
    dense_train = dense_train_structure(template, x_train, task) if task != "detection" else None
    return x, x_train, dense_struct, dense_flops, dense_macs, out_channels, dense_train


def child(name, task, tool, ratios, out_path, threads):
    import torch
    warnings.filterwarnings("ignore")
    if threads:
        torch.set_num_threads(threads)
    import torch_pruning  # noqa: F401

    import prunekit  # noqa: F401  (imports stay outside the timed region)
    template = build(name, task)
    params_before = sum(p.numel() for p in template.parameters())
    try:
        x, x_train, dense_struct, dense_flops, dense_macs, out_channels, dense_train = \
            dense_reference(template, name, task)
    except Exception as err:  # noqa: BLE001 - the dense model needs inputs we cannot give
        with open(out_path, "a") as f:
            for ratio in ratios:
                f.write(json.dumps({"model": name, "task": task, "tool": tool, "ratio": ratio,
                                    "status": "skipped", "error": f"dense: {_first_line(err)}",
                                    "seconds": None}) + "\n")
        return
    for ratio in ratios:
        record = {"model": name, "task": task, "tool": tool, "ratio": ratio,
                  "params_before": params_before, "macs_before": dense_macs,
                  "flop_macs_before": dense_flops, "params_after": None, "macs_after": None,
                  "flop_macs_after": None, "seconds": None, "status": "error", "error": None}
        model = copy.deepcopy(template)
        stage = "prune"
        try:
            start = time.perf_counter()
            record.update(RUNNERS[tool](model, x, ratio, name, task, out_channels))
            record["seconds"] = time.perf_counter() - start
            record["params_after"] = sum(p.numel() for p in model.parameters())
            stage = "forward"
            got, record["flop_macs_after"], record["macs_after"] = eval_forward(model, x, task)
            if got != dense_struct:
                raise RuntimeError(f"output {got} != dense {dense_struct}")
            if dense_train is not None:
                stage = "train forward/backward"
                got = train_forward_backward(model, x_train, task)
                if got != dense_train:
                    raise RuntimeError(f"train output {got} != dense {dense_train}")
            smaller = record["params_after"] < params_before and record["macs_after"] < dense_macs
            record["status"] = "ok" if smaller else "no reduction"
        except Exception as err:  # noqa: BLE001 - every failure is a result
            record["error"] = f"{stage}: {_first_line(err)}"
        del model
        with open(out_path, "a") as f:
            f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- parent

def select_models(args, parser):
    """({name: task} to run, {name or timm module: why skipped}, {timm name: timm module})."""
    suites = ("torchvision", "timm", "yolo") if args.suite == "all" else (args.suite,)
    tasks, timm_modules, skipped = {}, {}, {}
    if "torchvision" in suites:
        tasks.update(catalogue(args.include_detection, args.include_segmentation))
    if "yolo" in suites:
        tasks.update(dict.fromkeys(yolo_suite.names(), "yolo"))
    if args.models:
        every = catalogue(True, True) if "torchvision" in suites else {}
        every.update(dict.fromkeys(yolo_suite.names(), "yolo") if "yolo" in suites else {})
        names = [timm_suite.PREFIX + n if "timm" in suites and n not in every and not timm_suite.is_timm(n)
                 else n for n in args.models.split(",") if n]
        missing = [n for n in names if n not in every and not timm_suite.known(n)]
        if missing:
            parser.error(f"not {' or '.join(suites)} models: {missing}")
        tasks = {n: every.get(n, "timm") for n in names}
    elif "timm" in suites:
        timm_modules, unbuildable = timm_suite.smallest_per_module()
        tasks.update(dict.fromkeys(timm_modules, "timm"))
        skipped.update({f"timm module {m}": f"no model builds: {why}" for m, why in unbuildable.items()})
    if args.max_params:
        limit = _parse_size(args.max_params)
        for name, task in list(tasks.items()):
            count = count_params_meta(name, task)
            if count is not None and count > limit:
                skipped[name] = f"{count / 1e6:.1f}M parameters > --max-params {args.max_params}"
                del tasks[name]
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    return tasks, skipped, timm_modules


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("torchvision", "timm", "yolo", "all"), default="torchvision")
    parser.add_argument("--ratios", default="0.3,0.5")
    parser.add_argument("--models", help="comma list (default: every model of the suite; timm "
                        "names with or without 'timm/')")
    parser.add_argument("--max-params", help="skip models with more parameters, e.g. 200M")
    parser.add_argument("--include-detection", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--include-segmentation", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--timeout", type=float, default=300, help="seconds per model, tool and ratio")
    parser.add_argument("--threads", type=int, help="torch threads in each child (default: torch's)")
    parser.add_argument("--max-rss", help="kill a child above this resident memory, e.g. 16G "
                        "(default: 80%% of the machine's memory)")
    parser.add_argument("--json")
    parser.add_argument("--jsonl", help="append each model's records here as it finishes; models already there "
                        "are skipped, so the same command resumes an interrupted run")
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    tools = [t for t in args.tools.split(",") if t]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {TOOLS}")
    started = time.time()
    tasks, skipped, timm_modules = select_models(args, parser)
    total = _mem_total()
    max_rss = _parse_size(args.max_rss) if args.max_rss else int(0.8 * total) if total else None
    print(f"{len(tasks)} models, ratios {ratios}, tools {tools}")
    print(f"{'':>38} {'':>5} | {'prunekit (after/dense)':^18} | {'Torch-Pruning':^18} |")
    print(f"{'model':>38} {'ratio':>5} | {'param':>5} {'MACs':>5} {'sec':>6} | "
          f"{'param':>5} {'MACs':>5} {'sec':>6} | status")
    records = _resumed(args.jsonl, tasks, tools, ratios)
    done = {r["model"] for r in records}
    for name, task in tasks.items():
        if name in done:
            continue
        mine = []
        for tool in tools:
            mine += run_tool(__file__, name, task, tool, ratios, args.timeout, args.threads, max_rss)
        records += mine
        if args.jsonl:  # a run longer than a session continues from here (same command again)
            with open(args.jsonl, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in mine)
        for ratio in ratios:
            print_row(name, ratio, {r["tool"]: r for r in mine if r["ratio"] == ratio})
    lines = summary(records, tools, ratios)
    print("\n" + "\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "suite": args.suite, "ratios": ratios, "tools": tools, "models": list(tasks),
            "timm_modules": timm_modules, "skipped": skipped, "summary": lines,
            "wall_s": time.time() - started, "versions": _versions(), "records": records}, indent=2))
    return records


def _resumed(path, tasks, tools, ratios) -> list:
    """Records already in --jsonl for models of this run with every tool and ratio done."""
    if not path or not Path(path).exists():
        return []
    found = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    need = {(t, r) for t in tools for r in ratios}
    complete = {m for m in {r["model"] for r in found}
                if need <= {(r["tool"], r["ratio"]) for r in found if r["model"] == m}}
    kept = [r for r in found if r["model"] in complete and r["model"] in tasks]
    print(f"resuming: {len(complete & set(tasks))} models already in {path}")
    return kept


def _versions():
    import importlib.metadata as md
    out = {}
    for package in ("torch", "torchvision", "timm", "ultralytics", "torch-pruning", "prunekit"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--child":
        _, _, model_name, task_name, tool_name, ratio_text, path, thread_text = sys.argv
        child(model_name, task_name, tool_name, [float(r) for r in ratio_text.split(",")], path,
              int(thread_text))
    else:
        main()
