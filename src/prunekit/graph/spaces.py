"""Channel spaces: removable units grouped by the layers that produce them."""
from dataclasses import dataclass, field

import numpy as np

from prunekit.graph.labels import NONE, PIN


@dataclass
class Space:
    """Units sharing one channel dimension; `name` is the first layer producing it."""
    name: str
    units: np.ndarray
    modules: list = field(default_factory=list)


def spaces(uf, slices, candidates=None) -> list:
    """Units (roots holding at least one produced channel), grouped by producing layers;
    only roots in `candidates` if given."""
    space_of, spaces = {}, []
    for s in slices:
        if s.role != "out":
            continue
        roots = uf.find(s.labels[s.labels != NONE])
        roots = np.unique(roots[roots != PIN])
        joined = {space_of[r] for r in roots.tolist() if r in space_of}
        target = min(joined) if joined else len(spaces)
        if not joined:
            spaces.append(Space(s.module, np.zeros(0, np.int64)))
        for other in sorted(joined - {target}, reverse=True):  # merge spaces tied by this layer
            for r in spaces[other].units.tolist():
                space_of[r] = target
            spaces[target].units = np.concatenate([spaces[target].units, spaces[other].units])
            spaces[target].modules += spaces[other].modules
            spaces[other] = None
        new = [r for r in roots.tolist() if r not in space_of]
        for r in new:
            space_of[r] = target
        spaces[target].units = np.concatenate([spaces[target].units, np.array(new, dtype=np.int64)])
        if s.module not in spaces[target].modules:
            spaces[target].modules.append(s.module)
    spaces = [s for s in spaces if s is not None]
    if candidates is not None:
        for space in spaces:
            space.units = np.array([u for u in space.units.tolist() if u in candidates], dtype=np.int64)
    return [s for s in spaces if len(s.units)]
