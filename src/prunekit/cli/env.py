"""prunekit env: versions, for bug reports."""
import platform

from prunekit.cli._args import write_json


def add(add_parser, common):
    p = add_parser("env", parents=[common], help="versions, for bug reports")
    p.add_argument("--json")
    p.set_defaults(func=run)


def run(args):
    import numpy
    import torch

    import prunekit
    info = {"prunekit": prunekit.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    for key, value in info.items():
        print(f"{key:>10}: {value}")
    if args.json:
        write_json(args.json, info)
