"""The main job: dense model -> each method over a sparsity sweep -> fine-tune -> measure.

Decisions (best epoch) use the validation split; the test split is read only for the final
accuracy of each model. Latency of every model is timed in one interleaved loop, so the
speedups are ratios measured side by side.
"""
import copy
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from prunekit import data as datasets
from prunekit import zoo
from prunekit._utils.atomic import atomic_path
from prunekit._utils.environment import environment
from prunekit._utils.paths import home
from prunekit._utils.seeding import seeded
from prunekit._utils.validate import check_count, check_range
from prunekit.deploy import SparseLinear, to_sparse
from prunekit.deploy.choose import candidates
from prunekit.errors import PruneError
from prunekit.experiments import methods
from prunekit.experiments.methods.context import Context
from prunekit.masks import make_permanent
from prunekit.measure import _run, compare, measure, time_models
from prunekit.serialization import load, save, sources
from prunekit.train.loop import FitConfig, evaluate, fit
from prunekit.training import lottery

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("magnitude-global", "magnitude-layer", "structured", "hybrid")


@dataclass
class CompareConfig:
    model: str = ""                 # zoo name, torchvision:NAME, timm:NAME, hf:DIR, a pk.save file; "" = the dataset's default
    weights: str = ""               # a weights file for the model (safetensors or a torch state dict)
    trust_pickle: bool = False      # allow a pickled model or weights file (unpickling runs code)
    dataset: str = "mnist"          # a name for data.load: built-in, npz:FILE, folder:PATH, IDX folder
    image_size: int = datasets.IMAGE_SIZE  # folder:PATH images are resized to this square size
    methods: tuple = DEFAULT_METHODS
    sparsities: tuple = (0.5, 0.8, 0.9, 0.95)
    epochs: int = 6                 # dense training
    finetune_epochs: int = 1
    finetune_limit: int = 0         # samples per fine-tune epoch; 0 = all
    finetune_lr: float = 0.01
    seed: int = 0
    latency_batch: int = 64
    latency_repeats: int = 30
    threads: int = 2
    out: Path = field(default_factory=lambda: Path("runs/compare"))
    checkpoints: Path | None = None  # fine-tuning checkpoints (a run resumes from them); None: OUT/checkpoints

    @classmethod
    def quick(cls, **overrides):
        """Whole run within ~3 minutes on 2 cores: short training, fine-tune on a subset."""
        settings = dict(sparsities=(0.5, 0.8, 0.92), epochs=2, finetune_epochs=1, finetune_limit=12000,
                        latency_repeats=20)
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**settings)


def validate(config: CompareConfig):
    """Refuse a bad config before any work starts."""
    for name in config.methods:
        methods.get(name)
    for s in config.sparsities:
        check_range("sparsity", s, 0, 1, "()")
    if config.model:
        sources.check_spec(config.model)
    if config.epochs < 1 or config.finetune_epochs < 0:
        raise PruneError("epochs must be >= 1 and finetune epochs >= 0")
    for name in ("threads", "latency_batch", "latency_repeats"):
        check_count(name, getattr(config, name), 1)


def dense_model(config: CompareConfig, dataset, quiet=False):
    """(the trained dense model, lottery.snapshot of its weights before training), from the
    cache under $PRUNEKIT_HOME when both are there. The snapshot is what the lottery methods
    rewind to: kept, not rebuilt by replaying the seed (which reproduces it only while the
    model's initialisation draws nothing but the global torch RNG)."""
    name = config.model or zoo.DEFAULT_FOR_DATASET.get(dataset.name, "lenet300")
    if sources.is_pretrained(name, config.weights or None):  # its weights are the dense model: no training
        model = sources.load_model(name, weights=config.weights or None, trust_pickle=config.trust_pickle,
                                   **sources.for_data(name, dataset))
        sources.check_outputs(model, dataset)
        return model, lottery.snapshot(model)
    safe_name = name.replace(":", "-").replace("/", "-")
    cache = home() / "models" / f"{safe_name}-{dataset.name}-e{config.epochs}-s{config.seed}.safetensors"
    initial_cache = cache.with_name(cache.stem + ".initial.safetensors")
    if cache.exists() and initial_cache.exists():
        try:
            log.info("dense model from cache %s", cache)
            return load(cache), _load_snapshot(initial_cache)
        except PruneError as err:
            log.warning("ignoring unreadable cache %s: %s", cache, err)
    elif cache.exists():
        log.info("no initial weights beside the cached %s (written before they were kept): training again", cache)
    with seeded(config.seed):  # the same initial weights for a seed, the caller's RNG untouched
        model = zoo.build(name, **sources.for_data(name, dataset))
    initial = lottery.snapshot(model)
    fit(model, dataset, FitConfig(epochs=config.epochs, seed=config.seed),
        checkpoint_dir=_checkpoints(config, "dense"), quiet=quiet)
    save(model, cache)
    with atomic_path(initial_cache) as tmp:
        save_file({k: v.contiguous() for k, v in initial.items()}, str(tmp))
    return model, initial


def _load_snapshot(path) -> dict:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise PruneError(f"cannot read {path}: {err}") from None


def _checkpoints(config, tag):
    """A checkpoint folder per run setting, so a resume never picks up another setting's state."""
    settings = (config.model, config.dataset, config.epochs, config.seed, config.finetune_epochs,
                config.finetune_limit, config.finetune_lr, config.image_size)
    digest = hashlib.sha1(repr(settings).encode()).hexdigest()[:10]
    return (config.checkpoints or config.out / "checkpoints") / digest / tag


def resume_dir(out) -> Path:
    """Where a run whose outputs go to `out` keeps its checkpoints until it succeeds: under
    $PRUNEKIT_HOME, outside `out`, so the outputs are written whole or not at all (atomic_dir)
    while the same command run again after a failure still resumes."""
    key = hashlib.sha1(str(Path(out).resolve()).encode()).hexdigest()[:12]
    return home() / "resume" / key


def _finetune_config(config):
    return FitConfig(epochs=config.finetune_epochs, lr=config.finetune_lr, limit=config.finetune_limit,
                     seed=config.seed)


def method_context(config, dataset, initial):
    """What methods that train need: data, both training budgets, the dense model's initial
    weights (`initial`, the snapshot dense_model returns)."""
    return Context(dataset, _finetune_config(config), FitConfig(epochs=config.epochs, seed=config.seed), initial)


def prune_and_finetune(dense, dataset, example, steps, config, quiet=False, context=None):
    """A pruned, fine-tuned copy of `dense` with masks baked in (plain weights, no hooks).
    `steps`: [(method, sparsity), ...] applied in order, each fine-tuned after; methods that
    train while pruning spend the fine-tuning budget themselves."""
    model = copy.deepcopy(dense)
    for i, (method, sparsity) in enumerate(steps):
        model = methods.get(method)(model, example, sparsity, config.seed, context)
        if config.finetune_epochs and not methods.trains(method):
            tag = f"{method}-{sparsity:g}" + (f"-step{i}" if i else "")
            fit(model, dataset, _finetune_config(config), checkpoint_dir=_checkpoints(config, tag), quiet=quiet)
    return make_permanent(model)


def sweep(config: CompareConfig) -> dict:
    """{(method, sparsity): [(method, sparsity)]}: every method at every sparsity, one step each
    (N:M once, at its own sparsity)."""
    plan = {}
    for method in config.methods:
        fixed = methods.fixed_sparsity(method)
        for sparsity in config.sparsities if fixed is None else (fixed,):
            plan[(method, sparsity)] = [(method, sparsity)]
    return plan


def pipeline(steps) -> dict:
    """The plan of one multi-step run, labelled by its methods joined with "+" (an N:M step
    at the sparsity its pattern sets)."""
    steps = [(m, methods.fixed_sparsity(m) or s) for m, s in steps]
    return {("+".join(m for m, _ in steps), steps[-1][1]): steps}


def _metrics(model, example, dataset, path):
    """Counts, MACs, memory and energy of `model`, its test accuracy, and its real file sizes."""
    metrics = measure(model, example, latency=False)
    metrics["accuracy"] = evaluate(model, dataset.test)
    save(model, path.with_suffix(".dense.safetensors"), format="dense")
    save(model, path, format="compressed")
    metrics["file_bytes_dense"] = path.with_suffix(".dense.safetensors").stat().st_size
    metrics["file_bytes"] = path.stat().st_size
    return metrics


def _row(method, sparsity, baseline, metrics):
    ratios = compare(baseline, metrics)
    return {"method": method, "target_sparsity": sparsity,
            "achieved_sparsity": 1 - metrics["nonzeros"] / baseline["prunable_params"],
            "compression_ratio": ratios["compression_ratio"], "accuracy": metrics["accuracy"],
            "accuracy_retention": ratios["accuracy_retention"], "speedup": ratios["speedup"],
            "theoretical_speedup": ratios["theoretical_speedup"],
            "memory_reduction": ratios["memory_reduction"], "energy_efficiency": ratios["energy_efficiency"],
            "energy_method": metrics["energy"]["method"], "size_bytes": metrics["file_bytes"],
            "size_bytes_dense": metrics["file_bytes_dense"], "params": metrics["params"],
            "nonzeros": metrics["nonzeros"], "latency_ms": 1e3 * metrics["latency"]["median_s"]}


def run_compare(config: CompareConfig, quiet=False, plan=None) -> dict:
    """The comparison as a JSON-able dict: {"config", "baseline", "runs": [...]}. `plan`:
    {(label, sparsity): steps} to run (see `sweep`, the default, and `pipeline`)."""
    validate(config)
    plan = plan or sweep(config)
    for steps in plan.values():
        for method, sparsity in steps:
            methods.get(method)
            check_range("sparsity", sparsity, 0, 1, "()")
    dataset = datasets.load(config.dataset, image_size=config.image_size)
    dense, initial = dense_model(config, dataset, quiet)
    example = dataset.test.x[:config.latency_batch].clone()  # its own storage, not the test set's
    models_dir = config.out / "models"
    baseline = _metrics(dense, example, dataset, models_dir / "dense.safetensors")
    pruned, context = {}, method_context(config, dataset, initial)
    for (label, sparsity), steps in plan.items():
        log.info("%s at sparsity %g", label, sparsity)
        model = prune_and_finetune(dense, dataset, example, steps, config, quiet, context)
        pruned[(label, sparsity)] = (model, _metrics(model, example, dataset,
                                                     models_dir / f"{label}-{sparsity:g}.safetensors"))
    timed = {"dense": dense, **{f"{m}@{s}": model for (m, s), (model, _) in pruned.items()}}
    sparse = _with_sparse_kernels(pruned, example, config.threads)
    timed.update({f"{key}+sparse": model for key, model in sparse.items()})
    latency = time_models(timed, example, repeats=config.latency_repeats, threads=config.threads)
    baseline["latency"] = latency["dense"]
    runs = []
    for (method, sparsity), (model, metrics) in pruned.items():
        key = f"{method}@{sparsity}"
        metrics["latency"] = latency[key]
        runs.append(_row(method, sparsity, baseline, metrics))
        if key in sparse:  # the same weights on the kernels pk.to_sparse chose
            runs[-1]["speedup_sparse_kernels"] = latency["dense"]["median_s"] / latency[key + "+sparse"]["median_s"]
            runs[-1]["sparse_kernels"] = _kernel_counts(sparse[key])
    base = {k: baseline[k] for k in ("params", "prunable_params", "macs", "accuracy", "peak_memory",
                                     "file_bytes", "file_bytes_dense")}
    base.update(latency_ms=1e3 * baseline["latency"]["median_s"], energy=baseline["energy"],
                model=type(dense).__name__, dataset=dataset.name, input_shape=list(dataset.input_shape))
    steps = {f"{label}@{sparsity:g}": [list(step) for step in plan[(label, sparsity)]] for label, sparsity in plan}
    return {"config": {**_config_dict(config), "steps": steps}, "baseline": base, "runs": runs,
            "environment": environment()}


def _with_sparse_kernels(pruned, example, threads) -> dict:
    """{"method@sparsity": a copy on pk.to_sparse's kernels} for the models with zeroed weights
    (magnitude rows); structured rows are already dense and smaller."""
    found = {}
    with _run.threads(threads):
        for (method, sparsity), (model, _) in pruned.items():
            if candidates(model):
                found[f"{method}@{sparsity}"] = to_sparse(copy.deepcopy(model), example)
    return found


def _kernel_counts(model) -> dict:
    counts = {}
    for module in model.modules():
        kernel = getattr(module, "kernel", None) if isinstance(module, SparseLinear) else (
            "dense" if type(module).__name__ == "Linear" else None)
        if kernel:
            counts[kernel] = counts.get(kernel, 0) + 1
    return counts


def _config_dict(config):
    d = dict(config.__dict__)
    d.pop("checkpoints")  # where the run kept its state, not a setting of it
    d["out"], d["methods"], d["sparsities"] = str(config.out), list(config.methods), list(config.sparsities)
    return d
