"""Run a validated prune or compare recipe: data, model, dense training (unless pretrained),
the prune steps with fine-tuning, evaluation side by side with the dense model, export,
report; the resolved recipe (every default filled in) is written beside the outputs first.
(An llm recipe is a set of `prunekit llm` options: the CLI runs it.)"""
import json
from pathlib import Path

import torch

from prunekit._utils.atomic import write_text
from prunekit.deploy.onnx import export_onnx
from prunekit.errors import PruneError
from prunekit.experiments.compare import CompareConfig, pipeline, run_compare
from prunekit.recipes.load import dump
from prunekit.recipes.schema import CompareRecipe, PruneRecipe, SlimRecipe
from prunekit.recipes.slim import run_slim
from prunekit.report import write_report
from prunekit.serialization import load, save


def compare_config(recipe) -> CompareConfig:
    """The CompareConfig a prune or compare recipe stands for."""
    sweep = getattr(recipe, "compare", None)
    extra = {"methods": tuple(sweep.methods), "sparsities": tuple(sweep.sparsities)} if sweep else {}
    return CompareConfig(
        model=recipe.model.source, weights=recipe.model.weights or "", trust_pickle=recipe.model.trust_pickle,
        dataset=recipe.data.source, image_size=recipe.data.image_size, epochs=recipe.train.epochs,
        finetune_epochs=recipe.finetune.epochs, finetune_limit=recipe.finetune.limit, finetune_lr=recipe.finetune.lr,
        seed=recipe.seed, latency_batch=recipe.evaluate.latency_batch, latency_repeats=recipe.evaluate.repeats,
        threads=recipe.evaluate.threads, out=Path(recipe.out), **extra)


def run(recipe, quiet: bool = False) -> dict:
    """Run a PruneRecipe, CompareRecipe or SlimRecipe; returns the result written to OUT/result.json."""
    if isinstance(recipe, SlimRecipe):
        return run_slim(recipe, quiet)
    if not isinstance(recipe, (PruneRecipe, CompareRecipe)):
        raise PruneError(f"recipes.run takes a prune, compare or slim recipe, not a {recipe.task} one")
    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "recipe.yaml", dump(recipe))
    config = compare_config(recipe)
    plan = pipeline([(s.method, s.sparsity) for s in recipe.prune]) if isinstance(recipe, PruneRecipe) else None
    result = run_compare(config, quiet=quiet, plan=plan)
    if isinstance(recipe, PruneRecipe):
        result["exported"] = _export(recipe, out, result)
    write_text(out / "result.json", json.dumps(result, indent=2, default=str))
    if recipe.report:
        write_report(out, compute_sensitivity=False)
    return result


def _export(recipe, out: Path, result) -> dict:
    """The pruned model in the recipe's export forms: {form: path}. Compare already wrote it
    dense and compressed under OUT/models/; the forms asked for are copied or made from there."""
    label = result["runs"][0]["method"]
    sparsity = result["runs"][0]["target_sparsity"]
    source = out / "models" / f"{label}-{sparsity:g}.safetensors"
    model = load(source)
    path = save(model, out / "model.safetensors", format=recipe.export.format, int8=recipe.export.int8)
    written = {recipe.export.format + ("-int8" if recipe.export.int8 else ""): str(path)}
    if recipe.export.onnx:
        shape = result["baseline"]["input_shape"]
        written["onnx"] = export_onnx(model, torch.randn(1, *shape), out / "model.onnx")["path"]
    return written
