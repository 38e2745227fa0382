"""What a report shows beyond a run's result: per-layer sparsity of each saved model, the dense
model's per-layer sensitivity, the recipe and the environment, gathered from the run's folder
(what `prunekit compare` and `prunekit run` write)."""
import json
import logging
from pathlib import Path

import yaml

from prunekit import data
from prunekit._utils.atomic import write_text
from prunekit.errors import PruneError
from prunekit.masks import sparsity
from prunekit.report.html import LAYER_PLOT, SENSITIVITY_PLOT, write_html
from prunekit.report.plots import write_layer_plot, write_plots, write_sensitivity_plot
from prunekit.search.layerwise import sensitivity
from prunekit.serialization import load
from prunekit.train.loop import evaluate

log = logging.getLogger(__name__)

RESULTS = ("result.json", "compare.json")
SENSITIVITY_GRID = (0.5, 0.7, 0.9, 0.95)


def read_result(run_dir) -> dict:
    run_dir = Path(run_dir)
    for name in RESULTS:
        path = run_dir / name
        if path.is_file():
            try:
                result = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise PruneError(f"{path} is not a complete JSON result ({err})") from None
            if not isinstance(result, dict) or not {"baseline", "runs"} <= set(result):
                raise PruneError(f"{path} is not a prunekit result: it has no baseline and runs")
            return result
    raise PruneError(f"{run_dir} holds no {' or '.join(RESULTS)}: give the folder a compare or run wrote")


def layer_density(run_dir, result) -> dict:
    """{"method@sparsity": {layer: nonzero weights / the dense layer's weights}} from the saved
    models (structured rows shrink layers: their fraction counts what was removed too)."""
    models = Path(run_dir) / "models"
    if not (models / "dense.safetensors").is_file():
        return {}
    dense = {name: row["params"] for name, row in sparsity(load(models / "dense.safetensors"))["layers"].items()}
    found = {}
    for run in result["runs"]:
        path = models / f"{run['method']}-{run['target_sparsity']:g}.safetensors"
        if path.is_file():
            layers = sparsity(load(path))["layers"]
            found[f"{run['method']}@{run['target_sparsity']:g}"] = {
                name: (layers[name]["params"] - layers[name]["zeros"]) / count if name in layers else 0.0
                for name, count in dense.items()}
    return found


def sensitivity_curves(run_dir, result, compute: bool):
    """The dense model's curves from RUN_DIR/sensitivity.json, else computed on the run's
    validation split and saved there when `compute`; None when neither."""
    path = Path(run_dir) / "sensitivity.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return {"dense": saved["dense"], **{n: {float(s): v for s, v in c.items()} for n, c in saved["layers"].items()}}
    if not compute or not (Path(run_dir) / "models" / "dense.safetensors").is_file():
        return None
    config = result["config"]
    dataset = data.load(config["dataset"], image_size=config.get("image_size", data.IMAGE_SIZE))
    log.info("per-layer sensitivity of the dense model on %s's validation split", dataset.name)
    curves = sensitivity(load(Path(run_dir) / "models" / "dense.safetensors"), lambda m: evaluate(m, dataset.val),
                         sparsities=SENSITIVITY_GRID)
    write_text(path, json.dumps({"dense": curves["dense"], "layers": {
        n: {str(s): v for s, v in c.items()} for n, c in curves.items() if n != "dense"}}, indent=2))
    return curves


def recipe_text(run_dir, result) -> str:
    """The run's recipe.yaml, or its settings as YAML (a compare run from the command line)."""
    path = Path(run_dir) / "recipe.yaml"
    return path.read_text() if path.is_file() else yaml.safe_dump(result.get("config", {}), sort_keys=False)


def write_report(run_dir, *, compute_sensitivity: bool = True) -> Path:
    """RUN_DIR/report.html and its plots, from what the run wrote there (see the module note)."""
    run_dir = Path(run_dir)
    result = read_result(run_dir)
    write_plots(result, run_dir)
    density = layer_density(run_dir, result)
    if density:
        write_layer_plot(density, run_dir / LAYER_PLOT)
    curves = sensitivity_curves(run_dir, result, compute_sensitivity)
    if curves:
        write_sensitivity_plot(curves, run_dir / SENSITIVITY_PLOT)
    return write_html(result, run_dir, recipe=recipe_text(run_dir, result))
