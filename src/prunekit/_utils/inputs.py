"""Example inputs: one normalisation for every entry point that runs a model."""
import torch
from torch.utils._pytree import tree_flatten

from prunekit.errors import PruneError

_LEAVES = (int, float, bool, str, type(None), slice, type(Ellipsis), torch.dtype, torch.device,
           torch.Size, torch.memory_format, torch.layout)


def tensors_of(value) -> list:
    """Every tensor in a nest of arguments or outputs, in pytree order."""
    found = []
    _collect(value, found)
    return found


def _collect(value, found) -> None:
    # plain containers by hand: tree_flatten on every torch call was a third of a trace's time
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif type(value) in (tuple, list):
        for item in value:
            _collect(item, found)
    elif type(value) is dict:
        for item in value.values():
            _collect(item, found)
    elif not isinstance(value, _LEAVES):  # namedtuples, model outputs, registered nodes
        found.extend(t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor))


def as_inputs(example_inputs, *, tensors_only=False) -> tuple:
    """The positional arguments of one forward call: a tensor, or a tuple/list holding tensors
    (a detection model's list of images goes in as `([image],)`). `tensors_only`: a tensor or
    a non-empty tuple of tensors, nothing else (measurement reads batch sizes and devices off
    the arguments)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if tensors_only:
        if isinstance(example_inputs, tuple) and example_inputs and \
                all(isinstance(t, torch.Tensor) for t in example_inputs):
            return example_inputs
        raise PruneError(f"example_inputs must be a Tensor or a non-empty tuple of Tensors, "
                         f"got {type(example_inputs).__name__}")
    if isinstance(example_inputs, (tuple, list)) and tensors_of(example_inputs):
        return tuple(example_inputs)
    raise PruneError("example_inputs must be a tensor or a tuple of positional arguments with "
                     f"tensors, for one forward call; got {type(example_inputs).__name__}")
