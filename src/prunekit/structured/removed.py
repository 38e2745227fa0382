"""res.removed: each step's removed channels written in the model's original indexing."""
import numpy as np

# A layer's input and output channels, as its channel counts see them: over all groups of a
# grouped conv, whose weight holds one group's inputs only.
_CHANNEL_COUNTS = {"in_channels": "in", "in_features": "in", "out_channels": "out", "out_features": "out"}
_NOT_REPORTED = ("bias", "running_mean", "running_var")


def record_removed(graph, units, plan, origin, removed):
    """Add this step's removed channels to `removed`, in the original indexing: a layer's from
    its channel counts, a BatchNorm's from its weight, a bare parameter's (a layer scale, a
    weight passed to F.conv2d) under "module.name"."""
    table, counted = graph.removal(units), set()
    for a in {(a.module, a.attr): a for a in reversed(graph.attrs)}.values():  # a layer called twice: once
        role = _CHANNEL_COUNTS.get(a.attr)
        if role is None or a.position is not None:
            continue
        counted.add((a.module, role))
        _note_gone(removed, a.module, role, origin, ("attr", a.module, a.attr),
                   graph.keep(a.labels, table))
    roles = {(s.module, s.tensor, s.dim): ("in" if s.role == "in" else "out") for s in graph.slices}
    for (module, tensor), dims in plan.tensors.items():
        for dim, keep in dims.items():
            key, role = (module, tensor, dim), roles[(module, tensor, dim)]
            kept = np.zeros(len(origin[key]), dtype=bool)
            kept[keep.numpy()] = True
            if tensor == "weight" and (module, role) not in counted:
                _note_gone(removed, module, role, origin, key, kept)
            elif tensor not in _NOT_REPORTED and tensor != "weight":
                _note_gone(removed, f"{module}.{tensor}" if module else tensor, role, origin, key, kept)
            else:
                origin[key] = origin[key][kept]


def _note_gone(removed, name, role, origin, key, kept):
    """Entries of `origin[key]` not `kept` go to removed[name][role]; origin keeps the rest."""
    indices = origin.setdefault(key, np.arange(len(kept)))
    if not kept.all():
        removed.setdefault(name, {"out": [], "in": []})[role].extend(indices[~kept].tolist())
    origin[key] = indices[kept]
