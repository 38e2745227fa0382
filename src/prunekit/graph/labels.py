"""Channel labels: which removable channel each element of a traced tensor belongs to.

Every tensor seen during the trace may carry a label array, broadcastable to its shape:
label 0 means "not a channel" (never removed), any other value is an *atom*. Removing an
atom removes every element labelled with it, in every tensor and weight. Ops that combine
elements (a residual add, a product, a concatenation seen by the next layer) tie atoms
together in a union-find; each resulting set is one removable unit. Atom 1 is PIN: a set
tied to it can't be removed (model outputs, inputs, tensors whose shape is fixed).
"""
import numpy as np

NONE, PIN = 0, 1


class UnionFind:
    """Disjoint sets of atoms over a growing numpy parent array; root = smallest atom."""

    def __init__(self):
        self.parent = np.arange(2, dtype=np.int64)  # 0 (none) and 1 (PIN)
        self.size = 2

    def new(self, n: int) -> np.ndarray:
        """`n` fresh atoms."""
        if self.size + n > len(self.parent):
            grown = np.arange(max(2 * len(self.parent), self.size + n), dtype=np.int64)
            grown[: self.size] = self.parent[: self.size]
            self.parent = grown
        atoms = np.arange(self.size, self.size + n, dtype=np.int64)
        self.size += n
        return atoms

    def find(self, atoms) -> np.ndarray:
        atoms = np.asarray(atoms, dtype=np.int64)
        roots = self.parent[atoms]
        while True:
            up = self.parent[roots]
            if np.array_equal(up, roots):
                break
            roots = up
        self.parent[atoms] = roots  # path compression for the queried atoms
        return roots

    def union(self, a, b) -> None:
        """Tie a[i] to b[i] for every i (equal-size arrays).

        An entry that is a channel on one side and not a channel (0) on the other can't be
        removed without changing a fixed shape, so its atom is tied to PIN.
        """
        a, b = np.ravel(a), np.ravel(b)
        a_channel, b_channel = a != NONE, b != NONE
        both = a_channel & b_channel
        one_sided = np.concatenate([a[a_channel & ~b_channel], b[b_channel & ~a_channel]])
        a = np.concatenate([a[both], one_sided])
        b = np.concatenate([b[both], np.full(len(one_sided), PIN, dtype=np.int64)])
        while len(a):
            ra, rb = self.find(a), self.find(b)
            differ = ra != rb
            if not differ.any():
                return
            lo, hi = np.minimum(ra[differ], rb[differ]), np.maximum(ra[differ], rb[differ])
            self.parent[hi] = lo
            a, b = a[differ], b[differ]

    def pin(self, labels) -> None:
        labels = np.unique(np.ravel(labels))
        labels = labels[labels != NONE]
        self.union(labels, np.full(len(labels), PIN))

    def pinned(self, atoms) -> np.ndarray:
        return self.find(atoms) == PIN


def compress(labels: np.ndarray) -> np.ndarray:
    """The same labels with every dim they don't vary along shrunk to size 1."""
    for dim in range(labels.ndim):
        if labels.shape[dim] > 1:
            first = np.take(labels, [0], axis=dim)
            if (labels == first).all():
                labels = first
    return labels


def varying_dims(labels: np.ndarray) -> list:
    return [d for d in range(labels.ndim) if labels.shape[d] > 1]


def along(labels: np.ndarray, dim: int, size: int, uf: UnionFind) -> np.ndarray:
    """One label per index of `dim` (length `size`): entries sharing an index are tied."""
    labels = np.asarray(labels)
    dim = dim % labels.ndim if labels.ndim else 0
    if labels.ndim == 0 or labels.size == 1:
        return np.full(size, labels.reshape(-1)[0] if labels.size else NONE, dtype=np.int64)
    moved = np.moveaxis(labels, dim, -1).reshape(-1, labels.shape[dim])
    for row in moved[1:]:
        uf.union(moved[0], row)
    vector = moved[0]
    return np.full(size, vector[0], dtype=np.int64) if len(vector) == 1 else vector


def settle(labels: np.ndarray, uf: UnionFind, unit_dim: str = "inner", grids: list = None) -> np.ndarray:
    """Keep labels varying along at most one dim, tying the rest.

    A tensor whose labels vary along two or more dims is a grid (heads x head_dim, q/k/v x
    heads x head_dim, groups x channels, a class token stacked on patch tokens). Only whole
    slices of one dim can be removed from a grid and keep it a tensor, so all entries
    sharing an index along that dim are tied. `unit_dim` "inner" picks the innermost varying
    dim (a channel: head_dim entries, a position in every group); "outer" the one just
    outside it (a head). Rows found that way are appended to `grids` as (vector, width of
    the innermost dim).
    """
    labels = compress(labels)
    dims = varying_dims(labels)
    if len(dims) < 2:
        return labels
    keep = dims[-1] if unit_dim == "inner" else dims[-2]
    vector = along(labels, keep, labels.shape[keep], uf)
    if grids is not None:
        grids.append((vector, labels.shape[dims[-1]]))
    shape = [1] * labels.ndim
    shape[keep] = labels.shape[keep]
    return vector.reshape(shape)


def keep_mask(labels_vector: np.ndarray, removed_roots, uf: UnionFind) -> np.ndarray:
    """True where an entry survives removing the units whose roots are in `removed_roots`
    (a set of roots, or a boolean table indexed by atom from `removal_table`)."""
    labels_vector = np.asarray(labels_vector)
    table = removed_roots if isinstance(removed_roots, np.ndarray) else removal_table(removed_roots, uf)
    keep = np.ones(len(labels_vector), dtype=bool)
    channel = labels_vector != NONE
    if channel.any():
        keep[channel] = ~table[uf.find(labels_vector[channel])]
    return keep


def removal_table(removed_roots, uf: UnionFind) -> np.ndarray:
    table = np.zeros(uf.size, dtype=bool)
    table[np.fromiter(removed_roots, dtype=np.int64, count=len(removed_roots))] = True
    return table
