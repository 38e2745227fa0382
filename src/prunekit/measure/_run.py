"""Running a model for measurement: input checks, eval + no_grad, and clean restores."""
import contextlib

import torch
from torch import nn

from prunekit.errors import PruneError


def batch_size(inputs: tuple) -> int:
    """First dimension of the first input (1 for a scalar)."""
    return int(inputs[0].shape[0]) if inputs[0].dim() else 1


def check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise PruneError(f"expected a torch.nn.Module, got {type(model).__name__}")


def forward(model: nn.Module, inputs: tuple):
    """model(*inputs); any failure becomes a one-line PruneError."""
    try:
        return model(*inputs)
    except PruneError:
        raise
    except Exception as err:  # noqa: BLE001 - any user forward failure is reported the same way
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise PruneError(f"forward of {type(model).__name__} on example_inputs failed: "
                         f"{type(err).__name__}: {first}") from err


def sync(inputs: tuple) -> None:
    """Wait for queued GPU work, so a timer stops when the work is really done."""
    if any(t.is_cuda for t in inputs) and torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def inference(*models: nn.Module):
    """eval() + no_grad for the block; every module's own training flag restored after
    (eval matters: train-mode BatchNorm would update running stats, changing the model).
    A frozen TorchScript module has no training flag: it is run as it is."""
    flags = [(m, m.training) for model in models for m in model.modules() if hasattr(m, "training")]
    try:
        for module, _ in flags:
            module.training = False
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def threads(count):
    """torch.set_num_threads(count) for the block (None keeps the current), restored after."""
    before = torch.get_num_threads()
    try:
        if count is not None:
            torch.set_num_threads(count)
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def forward_hooks(pairs):
    """Register (module, hook) forward hooks for the block; always removed after."""
    handles = []
    try:
        for module, hook in pairs:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
