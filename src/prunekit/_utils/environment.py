"""The machine and versions a run ran on: recorded in results, shown by `prunekit env`."""
import platform
from pathlib import Path


def environment() -> dict:
    import numpy
    import torch

    import prunekit
    return {"prunekit": prunekit.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(), "cpu": _cpu_model(),
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
