"""What a report shows beyond a run's result: per-layer sparsity of each saved model, the dense
model's per-layer sensitivity, the recipe and the environment, gathered from the run's folder
(what `prunekit compare` and `prunekit run` write)."""
import json
import logging
import math
from pathlib import Path

import yaml

from prunekit import data
from prunekit._utils.atomic import write_text
from prunekit.errors import PruneError
from prunekit.masks import sparsity
from prunekit.report.html import LAYER_PLOT, SENSITIVITY_PLOT, write_html
from prunekit.report.plots import write_layer_plot, write_plots, write_sensitivity_plot
from prunekit.report.table import COLUMNS
from prunekit.search.layerwise import sensitivity
from prunekit.serialization import load
from prunekit.train.loop import evaluate

log = logging.getLogger(__name__)

RESULTS = ("result.json", "compare.json")
SENSITIVITY_GRID = (0.5, 0.7, 0.9, 0.95)
_NUMBER = (int, float)
_OPTIONAL = (int, float, type(None))
# what the report reads of a result, {key: type}; a run's other columns (COLUMNS) may be missing or None
BASELINE = {"model": str, "dataset": str, "accuracy": _NUMBER, "latency_ms": _NUMBER, "file_bytes": _NUMBER,
            "params": _NUMBER, "energy": dict}
RUN = {"method": str, "target_sparsity": _NUMBER, "compression_ratio": _NUMBER, "accuracy": _NUMBER,
       "speedup": _NUMBER}


def read_result(run_dir) -> dict:
    run_dir = Path(run_dir)
    for name in RESULTS:
        path = run_dir / name
        if path.is_file():
            result = _read_json(path, "a complete JSON result")
            if not isinstance(result, dict) or not {"baseline", "runs"} <= set(result):
                raise PruneError(f"{path} is not a prunekit result: it has no baseline and runs")
            problem = _result_problem(result)
            if problem:
                raise PruneError(f"{path} is not a prunekit result: {problem}")
            return result
    raise PruneError(f"{run_dir} holds no {' or '.join(RESULTS)}: give the folder a compare or run wrote")


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PruneError(f"{path} is not {what} ({err})") from None


def _result_problem(result) -> str | None:
    """What in `result` the report could not read (a foreign or hand-edited file), or None."""
    problem = _fields_problem("baseline", result["baseline"], BASELINE)
    if problem:
        return problem
    if not isinstance(result["baseline"]["energy"].get("method"), str):
        return "baseline.energy has no method"
    if not isinstance(result["runs"], list):
        return f"runs is a {type(result['runs']).__name__}, not a list"
    for i, run in enumerate(result["runs"]):
        problem = _fields_problem(f"runs[{i}]", run, RUN)
        if problem:
            return problem
        if not 0 <= run["target_sparsity"] < 1:
            return f"runs[{i}].target_sparsity is {run['target_sparsity']}, not in [0, 1)"
        if run["compression_ratio"] <= 0:
            return f"runs[{i}].compression_ratio is {run['compression_ratio']}, not > 0"
        wrong = next((k for k, _, _ in COLUMNS if k != "method" and not isinstance(run.get(k), _OPTIONAL)), None)
        if wrong:
            return f"runs[{i}].{wrong} is {run[wrong]!r}, not a number"
    for key in ("config", "environment"):
        if not isinstance(result.get(key, {}), dict):
            return f"{key} is a {type(result[key]).__name__}, not a mapping"
    return None


def _finite(value) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _fields_problem(where, value, fields) -> str | None:
    if not isinstance(value, dict):
        return f"{where} is a {type(value).__name__}, not a mapping"
    for key, kind in fields.items():
        if key not in value:
            return f"{where} has no {key}"
        if kind is _NUMBER and not _finite(value[key]):
            return f"{where}.{key} is {value[key]!r}, not a finite number"
        if not isinstance(value[key], kind):
            return f"{where}.{key} is {value[key]!r}, not a {kind.__name__}"
    return None


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
        return _saved_curves(path)
    if not compute or not (Path(run_dir) / "models" / "dense.safetensors").is_file():
        return None
    config = result.get("config", {})
    if not isinstance(config.get("dataset"), str):
        raise PruneError(f"{run_dir}: the result's config names no dataset to compute the sensitivity on; "
                         "add --no-sensitivity")
    dataset = data.load(config["dataset"], image_size=config.get("image_size", data.IMAGE_SIZE))
    log.info("per-layer sensitivity of the dense model on %s's validation split", dataset.name)
    curves = sensitivity(load(Path(run_dir) / "models" / "dense.safetensors"), lambda m: evaluate(m, dataset.val),
                         sparsities=SENSITIVITY_GRID)
    write_text(path, json.dumps({"dense": curves["dense"], "layers": {
        n: {str(s): v for s, v in c.items()} for n, c in curves.items() if n != "dense"}}, indent=2))
    return curves


def _saved_curves(path: Path) -> dict:
    saved = _read_json(path, "a sensitivity result")
    try:
        curves = {n: {float(s): float(v) for s, v in c.items()} for n, c in saved["layers"].items()}
        return {"dense": float(saved["dense"]), **curves}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PruneError(f"{path} is not a sensitivity result (dense accuracy and layers' curves): "
                         "remove it to compute it again") from None


def recipe_text(run_dir, result) -> str:
    """The run's recipe.yaml, or its settings as YAML (a compare run from the command line)."""
    path = Path(run_dir) / "recipe.yaml"
    return path.read_text() if path.is_file() else yaml.safe_dump(result.get("config", {}), sort_keys=False)


def write_report(run_dir, *, compute_sensitivity: bool = True) -> Path:
    """RUN_DIR/report.html and its plots, from what the run wrote there (see the module note)."""
    run_dir = Path(run_dir)
    result = read_result(run_dir)
    density = layer_density(run_dir, result)
    curves = sensitivity_curves(run_dir, result, compute_sensitivity)  # the slow part, before any plot is written
    write_plots(result, run_dir)
    if density:
        write_layer_plot(density, run_dir / LAYER_PLOT)
    if curves:
        write_sensitivity_plot(curves, run_dir / SENSITIVITY_PLOT)
    return write_html(result, run_dir, recipe=recipe_text(run_dir, result))
