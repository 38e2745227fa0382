"""argparse types and arguments that several commands share."""
import argparse
import json
import math
import os
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prunekit.data.user import IMAGE_SIZE


def floats(text):
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _in_range(text, cast, low, high, what):
    """`text` as `cast`, with low < value <= high (an argparse type: a bad one is refused)."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not low < value <= high:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text):
    return _in_range(text, int, 0, float("inf"), "a whole number >= 1")


def positive_float(text):
    return _in_range(text, float, 0.0, sys.float_info.max, "a finite number > 0")


def fraction(text):
    """A fraction in (0, 1]: an accuracy retention floor."""
    return _in_range(text, float, 0.0, 1.0, "a fraction in (0, 1]")


def cut(text):
    """A fraction in (0, 1): how much of a cost to remove."""
    return _in_range(text, float, 0.0, math.nextafter(1.0, 0.0), "a fraction in (0, 1)")


def add_dataset(parser, default="mnist", help=None):
    """--dataset and --image-size, the same on every command that reads data."""
    parser.add_argument("--dataset", default=default, help=help or (
        "mnist (default), fashion-mnist, mnist1d, digits (mnist and fashion-mnist: run "
        "`prunekit data fetch NAME` once), npz:FILE, folder:PATH, hf:DIR (a Hugging Face dataset saved with "
        "save_to_disk), or a folder of MNIST IDX files"))
    parser.add_argument("--image-size", type=positive_int, default=IMAGE_SIZE,
                        help=f"folder:PATH images are resized to this square size (default {IMAGE_SIZE})")


MODEL_HELP = ("a file written by pk.save / prunekit prune, a zoo name (lenet5, lenet300, mlp1d), torchvision:NAME, "
              "timm:NAME, hf:DIR (a saved Hugging Face model) or ultralytics:CFG (a YOLO config, e.g. yolov8n.yaml)")


def add_weights(parser):
    """--weights and --trust-pickle, the same on every command that reads a model."""
    parser.add_argument("--weights", help="weights for the model: a .safetensors file, or a torch state dict "
                                          "(read with weights_only=True: no code runs)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a pickled model or weights file; reading one runs code, so only for files you trust")


def load_model(spec, args, dataset=None):
    """The model `spec` names (see MODEL_HELP) with --weights; a name is built to fit `dataset`."""
    from prunekit.serialization import sources
    kwargs = sources.for_data(spec, dataset) if dataset is not None else {}
    return sources.load_model(spec, weights=args.weights, trust_pickle=args.trust_pickle, **kwargs)


def load_dataset(args):
    from prunekit import data
    return data.load(args.dataset, image_size=args.image_size)


def write_json(path, payload):
    from prunekit._utils.atomic import write_text
    write_text(Path(path), json.dumps(payload, indent=2, default=str))


def check_outputs(files=(), folders=()):
    """Refuse, before any work, an output the command could not write at the end: a file path
    that is a folder (or a folder path that is a file), or one under a file or an unwritable
    folder. None entries (an output not asked for) are skipped."""
    from prunekit.errors import PruneError
    for path, folder in [(f, False) for f in files if f] + [(d, True) for d in folders if d]:
        path = Path(path)
        if path.is_dir() and not folder:
            raise PruneError(f"{path} is a folder: give a file name for this output")
        if path.exists() and not path.is_dir() and folder:
            raise PruneError(f"{path} is a file: give a folder for the outputs")
        above = next(p for p in path.absolute().parents if p.exists())
        if not above.is_dir():
            raise PruneError(f"cannot write {path}: {above} is a file, not a folder")
        if not os.access(above, os.W_OK | os.X_OK):
            raise PruneError(f"cannot write {path}: no permission to write in {above}")


@contextmanager
def outputs(*paths):
    """Temporary paths beside each output (None for one not asked for), renamed onto them
    together when the block succeeds: a failed run writes none of them and keeps the files
    already there."""
    from prunekit._utils.atomic import atomic_path
    with ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) if p else None for p in paths]


def ints(text):
    """Comma-separated whole numbers >= 1: batch sizes, thread counts, a sample's shape."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return values
