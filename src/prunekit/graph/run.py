"""Running a model under watch: torch calls and known-layer calls reported, on real or
meta tensors, leaving the model as it was (mode, cached attributes)."""
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils._pytree import tree_map

from prunekit.graph import layers
from prunekit.graph.trace import WatchMode


@contextmanager
def watch(model, ignored, on_op, on_leaf, meta=False):
    """Run `on_op` for every torch call and `on_leaf(name, module, args, kwargs, output)` for
    every call of a known layer (or ignored module), whose insides are not watched. `meta`:
    the model runs on meta tensors (see trace.call_on_meta)."""
    names = {id(m): n for n, m in model.named_modules()}
    mode = WatchMode(on_op, meta)
    stack = []

    def is_leaf(module):
        return module is not model and (names.get(id(module)) in ignored or layers.rule_for(module))

    def pre(module, args, kwargs):
        stack.append(names.get(id(module), "?"))
        if mode.leaf_depth or is_leaf(module):
            mode.leaf_depth += 1

    def post(module, args, kwargs, output):
        if mode.leaf_depth:
            mode.leaf_depth -= 1
            if mode.leaf_depth == 0:
                with torch._C.DisableTorchFunction():
                    on_leaf(stack[-1], module, args, kwargs, output)
        stack.pop()

    handles = []
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(module.register_forward_hook(post, with_kwargs=True))
        with mode:
            yield stack
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def attributes_kept(model):
    """Undo what a forward stores on modules outside parameters and buffers (a cache of
    anchors moved to the input's device), so a meta run leaves no meta tensor behind."""
    saved = [(m, dict(vars(m))) for m in model.modules()]
    try:
        yield
    finally:
        for module, attrs in saved:
            current = vars(module)
            for key in [k for k in current if k not in attrs]:
                del current[key]
            for key, value in attrs.items():
                if current.get(key) is not value:
                    current[key] = value


def meta_call(model, example_inputs, resize=None):
    """model(*example_inputs) with every parameter, buffer and input on the meta device;
    returns {id(meta parameter): [(module, name)]} and the call. `resize` {(module, name):
    {dim: kept indices}} gives tensors the shapes a pruning plan will give them."""
    meta_of, owners, state, resize = {}, {}, {}, resize or {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for kind in ("_parameters", "_buffers"):
            for name, tensor in getattr(module, kind).items():
                if tensor is None:
                    continue
                if id(tensor) not in meta_of:
                    shape = list(tensor.shape)
                    for dim, index in resize.get((module_name, name), {}).items():
                        shape[dim] = len(index)
                    meta = torch.empty(shape, dtype=tensor.dtype, device="meta")
                    meta_of[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) \
                        if isinstance(tensor, nn.Parameter) else meta
                state[f"{module_name}.{name}" if module_name else name] = meta_of[id(tensor)]
                if isinstance(tensor, nn.Parameter):
                    owners.setdefault(id(meta_of[id(tensor)]), []).append((module_name, name))
    inputs = tuple(tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, list(example_inputs)))
    return owners, lambda: _call_restoring(model, state, inputs)


def _call_restoring(model, state, inputs):
    """functional_call, then every module's own tensors put back: functional_call restores a
    module reached by two paths (a submodule shared by two blocks) from the meta tensor it
    swapped in through the first path, leaving meta weights in the model."""
    saved = [(m, dict(m._parameters), dict(m._buffers)) for m in model.modules()]
    try:
        return torch.func.functional_call(model, state, inputs, strict=False)
    finally:
        for module, params, buffers in saved:
            module._parameters.update(params)
            module._buffers.update(buffers)
