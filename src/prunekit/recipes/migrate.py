"""Old recipe files, brought to the current format before validation.

Version 0 (a file without `version`, or `version: 0`) is the flat form the first recipes had:
the fields of experiments.compare.CompareConfig at the top level (model, dataset, methods,
sparsities, epochs, finetune_epochs, ...). It always meant a compare run; version 1 nests the
same settings in sections. `to_current` returns the new mapping and, for each moved key, where
it came from, so an error still points at the line the user wrote."""
from prunekit.errors import PruneError
from prunekit.recipes.schema import VERSION

# version 0 key -> its path in version 1
V0_KEYS = {
    "model": ("model", "source"), "dataset": ("data", "source"), "image_size": ("data", "image_size"),
    "methods": ("compare", "methods"), "sparsities": ("compare", "sparsities"), "epochs": ("train", "epochs"),
    "finetune_epochs": ("finetune", "epochs"), "finetune_limit": ("finetune", "limit"),
    "finetune_lr": ("finetune", "lr"), "seed": ("seed",), "latency_batch": ("evaluate", "latency_batch"),
    "latency_repeats": ("evaluate", "repeats"), "threads": ("evaluate", "threads"), "out": ("out",),
}


def to_current(raw: dict, where: str):
    """(the recipe in the current version, {new key path: old key path})."""
    version = raw.get("version", 0)
    if version == VERSION:
        return raw, {}
    if version != 0:
        raise PruneError(f"{where}: version {version!r} is not a recipe version this prunekit knows "
                         f"(0 to {VERSION})")
    return _from_v0(raw)


def _from_v0(raw: dict):
    out = {"version": VERSION, "task": "compare"}
    origin = {}
    for key, value in raw.items():
        if key == "version":
            continue
        new = V0_KEYS.get(key, (key,))  # an unknown key goes through: validation names it
        section = out
        for part in new[:-1]:
            section = section.setdefault(part, {})
        section[new[-1]] = value
        origin[new] = (key,)
    out.setdefault("out", "runs/compare")
    return out, origin
