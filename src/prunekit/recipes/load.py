"""Read a recipe file: YAML -> migrated to the current version -> validated into a typed recipe.

A wrong key or value is one PruneError line naming the file, the line, the key path, and for
an unknown key the closest known one: "r.yaml:7: data.sorce: unknown key (did you mean
source?)". Nothing is run or written before the whole recipe is valid."""
import difflib
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from prunekit.errors import PruneError
from prunekit.recipes import migrate
from prunekit.recipes.schema import Recipe

_ADAPTER = TypeAdapter(Recipe)


def load(path) -> BaseModel:
    """The validated recipe in `path` (a PruneRecipe, CompareRecipe or LLMRecipe)."""
    path = Path(path)
    if not path.is_file():
        raise PruneError(f"no recipe file at {path}")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
        lines = _lines(yaml.compose(text))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise PruneError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(raw, dict):
        raise PruneError(f"{path}: a recipe is a mapping of keys (version, task, out, ...), not {type(raw).__name__}")
    current, origin = migrate.to_current(raw, str(path))
    try:
        return _ADAPTER.validate_python(current)
    except ValidationError as err:
        # an unknown key first: a misspelt one also shows up as the known one missing
        first = min(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise PruneError(_one_line(path, first, lines, origin, current)) from None


def _one_line(path, error, lines, origin, current) -> str:
    loc = tuple(error["loc"])
    task = current.get("task")
    if loc and loc[0] == task:  # a discriminated union puts the tag first
        loc = loc[1:]
    old = next((origin[loc[:n]] + loc[n:] for n in range(len(loc), 0, -1) if loc[:n] in origin), loc)
    key = ".".join(str(p) for p in old) or "(top)"  # as the user wrote it, before migration
    line = next((lines[old[:n]] for n in range(len(old), -1, -1) if old[:n] in lines), None)
    where = f"{path}:{line}" if line else str(path)
    if error["type"] == "extra_forbidden":
        known = _fields_at(task, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"
        return f"{where}: {key}: unknown key ({hint})"
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return f"{where}: task: must be one of prune, compare, llm, slim (got {task!r})"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {key}: {message} (got {error.get('input')!r})"


def _fields_at(task, loc) -> list:
    """The keys allowed at `loc` of a recipe of this task ([] where it cannot tell)."""
    cls = next((c for c in typing.get_args(typing.get_args(Recipe)[0])
                if c.model_fields["task"].annotation == typing.Literal[task]), None)
    for part in loc:
        if cls is None:
            return []
        if isinstance(part, int):
            continue  # a list's element: cls is already the element's type
        annotation = cls.model_fields[part].annotation if part in cls.model_fields else None
        cls = _model_in(annotation)
    return list(cls.model_fields) if cls else []


def _model_in(annotation):
    """The pydantic model class inside an annotation (X, X | None, list[X]), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, typing.get_args(annotation)) if m), None)


def _lines(node, path=()) -> dict:
    """{key path: 1-based line} of every key and list item in a composed YAML document."""
    found = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = path + (key.value,)
            found[here] = key.start_mark.line + 1
            found.update(_lines(value, here))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found[path + (i,)] = item.start_mark.line + 1
            found.update(_lines(item, path + (i,)))
    return found


def dump(recipe: BaseModel) -> str:
    """The recipe with every default filled in, as YAML (what a run saves beside its outputs)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
