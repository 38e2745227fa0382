"""The machine and versions a run ran on: recorded in results, shown by `prunekit env`."""
import platform
from importlib import metadata
from pathlib import Path


def environment() -> dict:
    import numpy
    import torch
    return {"prunekit": _own_version(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(), "cpu": _cpu_model(),
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def _own_version() -> str:
    try:
        return metadata.version("prunekit")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
