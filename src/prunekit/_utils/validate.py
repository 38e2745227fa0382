"""Argument checks shared by every entry point: counts, numbers in a range, regexes. Each
raises one PruneError line naming the argument, what it must be, and what it got."""
import math
import re

from prunekit.errors import PruneError


def check_count(name: str, value, minimum: int) -> int:
    """`value` must be an int (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PruneError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_range(name: str, value, low: float, high: float, bounds: str = "[]") -> float:
    """`value` must be a real number (not a bool, not NaN) between `low` and `high`; `bounds`
    says which ends are included, as in the interval's notation: "[]", "[)", "(]", "()"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        ok = False
    else:
        ok = (low <= value if bounds[0] == "[" else low < value) and \
             (value <= high if bounds[1] == "]" else value < high)
    if not ok:
        raise PruneError(f"{name} must be a number in {bounds[0]}{low:g}, {high:g}{bounds[1]}, got {value!r}")
    return float(value)


def compile_patterns(patterns, what: str) -> list:
    """A regex or a list of regexes, compiled; None is no patterns."""
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
