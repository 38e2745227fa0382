"""Run a validated prune or compare recipe: data, model, dense training (unless pretrained),
the prune steps with fine-tuning, evaluation side by side with the dense model, export,
report, and the resolved recipe (every default filled in) beside the outputs. The options are
checked before anything is made, and the outputs written under a temporary folder renamed onto
`out` when the run is complete: a failed run leaves `out` as it was.
(An llm recipe is a set of `prunekit llm` options: the CLI runs it.)"""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from prunekit._utils.atomic import atomic_dir, write_text
from prunekit.deploy.onnx import export_onnx
from prunekit.errors import PruneError
from prunekit.experiments.compare import CompareConfig, pipeline, resume_dir, run_compare, validate
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
    config = compare_config(recipe)
    validate(config)
    plan = pipeline([(s.method, s.sparsity) for s in recipe.prune]) if isinstance(recipe, PruneRecipe) else None
    with atomic_dir(out) as staged:
        write_text(staged / "recipe.yaml", dump(recipe))
        result = run_compare(replace(config, out=staged, checkpoints=resume_dir(out)), quiet=quiet, plan=plan)
        result["config"]["out"] = str(out)
        if isinstance(recipe, PruneRecipe):
            result["exported"] = _export(recipe, staged, result, out)
        write_text(staged / "result.json", json.dumps(result, indent=2, default=str))
        if recipe.report:
            write_report(staged, compute_sensitivity=False)
    shutil.rmtree(resume_dir(out), ignore_errors=True)  # complete: nothing left to resume
    return result


def _export(recipe, staged: Path, result, out: Path) -> dict:
    """The pruned model in the recipe's export forms: {form: its path under `out`}. Compare
    already wrote it dense and compressed under models/; the forms asked for are copied or made
    from there, into `staged` (the folder renamed onto `out` when the run is complete)."""
    label = result["runs"][0]["method"]
    sparsity = result["runs"][0]["target_sparsity"]
    model = load(staged / "models" / f"{label}-{sparsity:g}.safetensors")
    save(model, staged / "model.safetensors", format=recipe.export.format, int8=recipe.export.int8)
    written = {recipe.export.format + ("-int8" if recipe.export.int8 else ""): str(out / "model.safetensors")}
    if recipe.export.onnx:
        shape = result["baseline"]["input_shape"]
        export_onnx(model, torch.randn(1, *shape), staged / "model.onnx")
        written["onnx"] = str(out / "model.onnx")
    return written
