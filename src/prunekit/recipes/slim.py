"""A slim recipe: channels removed from a model with no data, the result checked and measured
side by side with the original, then saved (see schema.SlimRecipe)."""
import copy
import json
from pathlib import Path

import torch

from prunekit._utils.atomic import atomic_dir, write_text
from prunekit._utils.environment import environment
from prunekit.deploy.onnx import export_onnx
from prunekit.measure import compare, measure, time_models
from prunekit.recipes.load import dump
from prunekit.serialization import save
from prunekit.serialization.sources import load_model
from prunekit.structured.prune import prune_structured

FIGURES = ("params", "macs", "peak_memory", "size_bytes")


def run_slim(recipe, quiet: bool = False) -> dict:
    """Returns the result written to OUT/result.json: both models' figures and their ratios.
    All the work is done before anything is written; the outputs are then written under a
    temporary folder renamed onto OUT when complete (a failed run leaves OUT as it was)."""
    model = load_model(recipe.model.source, weights=recipe.model.weights, trust_pickle=recipe.model.trust_pickle,
                       **({"num_classes": recipe.num_classes} if recipe.num_classes else {})).eval()
    example = torch.randn(recipe.evaluate.latency_batch, *recipe.input_shape, generator=torch.Generator().manual_seed(0))
    summary = _slim(recipe, model, example)
    out = Path(recipe.out)
    with atomic_dir(out) as staged:
        write_text(staged / "recipe.yaml", dump(recipe))
        save(model, staged / "model.safetensors", format=recipe.export.format)
        summary["exported"] = {"model": str(out / "model.safetensors")}
        if recipe.export.onnx:
            export_onnx(model, example[:1], staged / "model.onnx")
            summary["exported"]["onnx"] = str(out / "model.onnx")
        write_text(staged / "result.json", json.dumps(summary, indent=2, default=str))
    return summary


def _slim(recipe, model, example) -> dict:
    """Slims `model` in place; returns both models' figures and their ratios."""
    dense = copy.deepcopy(model)
    p = recipe.prune
    result = prune_structured(model, example, ratio=p.ratio, importance=p.importance, round_to=p.round_to,
                              ignore=p.ignore or None, seed=recipe.seed)
    figures = {name: measure(m, example, latency=False) for name, m in (("original", dense), ("slim", model))}
    latency = time_models({"original": dense, "slim": model}, example, repeats=recipe.evaluate.repeats,
                          threads=recipe.evaluate.threads)
    for name in figures:
        figures[name]["latency"] = latency[name]
    return {"model": recipe.model.source, "input_shape": recipe.input_shape, "removed_blocks": result.blocks,
            "kept_fixed": result.kept_fixed, "ratios": compare(figures["original"], figures["slim"]),
            **{name: {k: figures[name][k] for k in FIGURES} | {"latency_ms": 1e3 * latency[name]["median_s"]}
               for name in figures}, "environment": environment()}
