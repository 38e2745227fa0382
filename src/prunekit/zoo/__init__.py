"""Reference models, registered by name so that saved files can rebuild them from data alone;
and the real pretrained ones that run offline."""
from prunekit.zoo.models import (
    DEFAULT_FOR_DATASET,
    MODELS,
    architecture,
    build,
    list_models,
    register,
)

__all__ = ["DEFAULT_FOR_DATASET", "MODELS", "architecture", "build", "list_models", "register"]
