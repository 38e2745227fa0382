"""The one exception users see: a clear, one-line ValueError naming the thing and the fix."""


class PruneError(ValueError):
    """Bad input or an impossible request. The model and files are left unchanged."""

