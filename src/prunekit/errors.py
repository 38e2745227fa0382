"""The one exception users see: a clear, one-line ValueError naming the thing and the fix."""


class PruneError(ValueError):
    """Bad input or an impossible request. The model and files are left unchanged."""


def check_count(name: str, value, minimum: int) -> None:
    """`value` must be an int (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PruneError(f"{name} must be an integer >= {minimum}, got {value!r}")
