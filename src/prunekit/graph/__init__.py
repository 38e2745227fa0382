"""Which channels are coupled: a traced walk from each producing layer to its consumers.

This first version follows chains: from a Conv/Linear's output through element-wise ops,
pooling, BatchNorm and flatten to the next Conv/Linear inputs. An op it cannot map
(residual add, concat, ...) is a PruneError naming the op and the module path: never a guess.
"""
import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import PruneError
from ..masks import PRUNABLE_TYPES

# Modules and functions that keep channel i at position i.
_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                 nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                 nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                 nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PASS_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.sigmoid, torch.tanh,
                   torch.nn.functional.gelu, torch.nn.functional.silu, torch.nn.functional.dropout,
                   torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d,
                   torch.nn.functional.adaptive_avg_pool2d, operator.getitem}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_FLATTENS = {torch.flatten, "flatten", "view", "reshape"}


@dataclass
class Member:
    name: str       # qualified module name
    dim: str        # "out" or "in"
    repeat: int = 1  # each channel is `repeat` consecutive input features (after a flatten)


@dataclass
class Group:
    """The output channels of `producer` and every tensor slice that must go with them."""
    producer: str
    channels: int
    members: list = field(default_factory=list)


def _trace(model, example_inputs):
    try:
        graph_module = fx.symbolic_trace(model)
        ShapeProp(graph_module).propagate(*example_inputs)
    except PruneError:
        raise
    except Exception as err:  # tracing errors are many and varied; report the first line
        raise PruneError(f"could not trace {type(model).__name__} for dependency analysis: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return graph_module


def _flatten_repeat(node):
    """Features per channel if `node` flattens (N, C, *S) to (N, C*prod(S)), else None."""
    shape_in = node.args[0].meta["tensor_meta"].shape
    shape_out = node.meta["tensor_meta"].shape
    if len(shape_in) >= 2 and len(shape_out) == 2 and shape_out[0] == shape_in[0]:
        return shape_out[1] // shape_in[1]
    return None


def _step(node, modules):
    """How channels flow through `node`: "pass", "norm", "consume", "flatten" or None."""
    if node.op == "output":
        return "output"
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, PRUNABLE_TYPES):
            return "consume"
        if isinstance(module, _NORMS):
            return "norm"
        if isinstance(module, _PASS_MODULES):
            return "pass"
        if isinstance(module, nn.Flatten):
            return "flatten"
    elif node.op == "call_function":
        if node.target in _PASS_FUNCTIONS:
            return "pass"
        if node.target is torch.flatten:
            return "flatten"
    elif node.op == "call_method":
        if node.target in _PASS_METHODS:
            return "pass"
        if node.target in _FLATTENS:
            return "flatten"
    return None


def _describe(node):
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
    return f"{node.op} {target!s} (node {node.name})"


def _walk(start, modules, producer):
    """Members fed by `start`'s output channels; None if they reach the model output."""
    members, stack = [], [(user, 1) for user in start.users]
    while stack:
        node, repeat = stack.pop()
        kind = _step(node, modules)
        if kind == "output":
            return None
        if kind is None:
            raise PruneError(f"cannot map channels of {producer!r} through {_describe(node)}; "
                             f"pass {producer!r} in ignore= to leave it unpruned")
        if kind == "consume":
            members.append(Member(node.target, "in", repeat))
            continue
        if kind == "flatten":
            factor = _flatten_repeat(node)
            if factor is None:
                raise PruneError(f"cannot map channels of {producer!r} through reshape {_describe(node)}")
            repeat *= factor
        elif kind == "norm":
            members.append(Member(node.target, "out"))
        stack.extend((user, repeat) for user in node.users)
    return members


def find_groups(model: nn.Module, example_inputs, ignore=()) -> list:
    """One Group per prunable producer whose channels do not reach the model output."""
    graph_module = _trace(model, example_inputs)
    modules = dict(graph_module.named_modules())
    groups = []
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], PRUNABLE_TYPES):
            continue
        if node.target in ignore:
            continue
        members = _walk(node, modules, node.target)
        if members is None:  # an output layer: its channels are the model's outputs
            continue
        module = modules[node.target]
        channels = module.weight.shape[1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0]
        groups.append(Group(node.target, channels, [Member(node.target, "out"), *members]))
    return groups
