"""Choosing which tensors to prune: module-name regexes over prunable layer types."""
import re

from torch import nn

from .errors import PruneError
from .masks import PRUNABLE_TYPES


def _compile(patterns, what):
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as err:
            raise PruneError(f"{what} pattern {pattern!r} is not a valid regex: {err}") from None
    return compiled


def select_modules(model: nn.Module, include=None, exclude=None, types=PRUNABLE_TYPES):
    """[(name, module)] of `types` whose name matches an include regex and no exclude regex."""
    if not isinstance(model, nn.Module):
        raise PruneError(f"expected a torch.nn.Module, got {type(model).__name__}")
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, types)]
    if not candidates:
        raise PruneError(f"{type(model).__name__} has nothing to prune: no "
                         f"{'/'.join(t.__name__ for t in types)} layers")
    includes, excludes = _compile(include, "include"), _compile(exclude, "exclude")
    for pattern in includes + excludes:
        if not any(pattern.search(n) for n, _ in candidates):
            names = ", ".join(n for n, _ in candidates[:8]) + (", ..." if len(candidates) > 8 else "")
            raise PruneError(f"pattern {pattern.pattern!r} matches no prunable module; they are: {names}")
    chosen = [(n, m) for n, m in candidates
              if (not includes or any(p.search(n) for p in includes))
              and not any(p.search(n) for p in excludes)]
    if not chosen:
        raise PruneError("include/exclude patterns leave no module to prune")
    return chosen
