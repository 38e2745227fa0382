"""Sparse forms of a 2-D weight, shared by the kernels and the compressed checkpoints.

- CSR: row pointers (int64, rows + 1), column indices (16-bit where the row is at most 65536
  wide, stored as int16 and read as unsigned by the kernels; else 32-bit), values.
- packed N:M: per row, the kept values of every group of M in order (N per group, zeros where a
  group keeps fewer) and their positions in the group as 4-bit nibbles, two per byte (the first
  in the low nibble). M is at most 16.
- row bitmask (the kernels'): one bit per column, each row padded to a multiple of 64 bits
  (bit c % 8 of byte c / 8), the kept values in row order followed by 8 zeros (the kernel's
  vector reads may run past the last), and row pointers into the values (int64, rows + 1).
- bitmask (the checkpoints'): serialization.sparse_format (values + np.packbits of the nonzeros).

Every `to_*` is exact: `dense(to_x(w)) == w` bit for bit (-0.0 becomes 0.0).
"""
import warnings

import torch

from prunekit.errors import PruneError

INDEX16_LIMIT = 1 << 16
# N:M patterns, sparsest first: a weight is packed with the first it fits (fewest kept values)
NM_PATTERNS = ((1, 16), (1, 8), (2, 16), (1, 4), (2, 8), (4, 16), (2, 4), (4, 8), (8, 16))


def to_csr(weight: torch.Tensor, index_bits: int = 16) -> dict:
    """{"rowptr", "cols", "values", "shape"} of a 2-D weight."""
    rows, width = _matrix(weight).shape
    if index_bits == 16 and width > INDEX16_LIMIT:
        raise PruneError(f"16-bit column indices need rows of at most {INDEX16_LIMIT} values, not {width}")
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the conversion itself is exact
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.detach().to_sparse_csr()
    parts = {"rowptr": csr.crow_indices().to(torch.int64).contiguous(),
             "cols": csr.col_indices().to(torch.int32).contiguous(),
             "values": csr.values().contiguous(), "shape": torch.tensor([rows, width])}
    return with_16bit_indices(parts) if index_bits == 16 else parts


def with_16bit_indices(parts: dict) -> dict:
    """The same CSR with 16-bit column indices (rows of at most 65536): stored as int16, the
    values above 32767 wrapped, read back as unsigned."""
    return {**parts, "cols": parts["cols"].to(torch.int16)}


def csr_dense(parts: dict) -> torch.Tensor:
    rows, width = parts["shape"].tolist()
    cols = parts["cols"].to(torch.int64)
    if parts["cols"].dtype == torch.int16:
        cols = cols % INDEX16_LIMIT  # the unsigned reading of the stored bits
    return torch.sparse_csr_tensor(parts["rowptr"].to(torch.int64), cols, parts["values"], (rows, width),
                                   check_invariants=False).to_dense()


def to_delta8(weight: torch.Tensor, csr: dict | None = None) -> dict:
    """{"rowptr", "deltas", "values", "shape"}: CSR whose columns are 8-bit steps from the previous
    kept column of the row (the first from column 0); a step over 255 goes through entries of
    value 0 and step 255. `csr`: the weight's to_csr(index_bits=32), if made already."""
    csr = csr or to_csr(weight, index_bits=32)
    rows, _ = csr["shape"].tolist()
    counts = csr["rowptr"].diff()
    cols = csr["cols"].to(torch.int64)
    row_of = torch.repeat_interleave(torch.arange(rows), counts)
    first = torch.zeros_like(cols, dtype=torch.bool)
    first[csr["rowptr"][:-1][counts > 0]] = True
    steps = torch.where(first, cols, cols - torch.cat([cols.new_zeros(1), cols[:-1]]))
    bridges = steps // 255  # entries of step 255 before each kept one
    entries = bridges + 1
    last = torch.cumsum(entries, 0) - 1  # where each kept entry lands
    deltas = torch.full((int(entries.sum()),), 255, dtype=torch.uint8)
    values = torch.zeros(int(entries.sum()), dtype=csr["values"].dtype)
    deltas[last], values[last] = (steps % 255).to(torch.uint8), csr["values"]
    per_row = torch.zeros(rows, dtype=torch.int64).index_add_(0, row_of, entries)
    rowptr = torch.cat([per_row.new_zeros(1), per_row.cumsum(0)])
    return {"rowptr": rowptr, "deltas": deltas, "values": values, "shape": csr["shape"]}


def delta8_columns(rowptr: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """The column of every stored entry: the running sum of its row's steps."""
    rowptr = rowptr.to(torch.int64)
    row_of = torch.repeat_interleave(torch.arange(rowptr.numel() - 1), rowptr.diff())
    total = deltas.to(torch.int64).cumsum(0)
    row_start = torch.cat([total.new_zeros(1), total])[rowptr[:-1]]  # running sum before each row
    return total - row_start[row_of]


def delta8_dense(parts: dict) -> torch.Tensor:
    rows, width = parts["shape"].tolist()
    rowptr = parts["rowptr"].to(torch.int64)
    row_of = torch.repeat_interleave(torch.arange(rows), rowptr.diff())
    cols = delta8_columns(rowptr, parts["deltas"])
    out = torch.zeros(rows, width, dtype=parts["values"].dtype)
    kept = parts["values"] != 0  # the bridges hold zeros
    out[row_of[kept], cols[kept]] = parts["values"][kept]
    return out


VALUE_PADDING = 8


def to_bitmask(weight: torch.Tensor) -> dict:
    """{"rowptr", "mask", "values", "shape"}: the row bitmask form (see the module's docstring)."""
    w = _matrix(weight).detach()
    rows, width = w.shape
    kept = w != 0
    padded = torch.zeros(rows, (width + 63) // 64 * 64, dtype=torch.uint8)
    padded[:, :width] = kept
    mask = (padded.view(rows, -1, 8) << torch.arange(8, dtype=torch.uint8)).sum(-1, dtype=torch.uint8)
    values = torch.cat([w[kept], w.new_zeros(VALUE_PADDING)])
    rowptr = torch.cat([torch.zeros(1, dtype=torch.int64), kept.sum(1).cumsum(0)])
    return {"rowptr": rowptr, "mask": mask.contiguous(), "values": values.contiguous(),
            "shape": torch.tensor([rows, width])}


def bitmask_dense(parts: dict) -> torch.Tensor:
    rows, width = parts["shape"].tolist()
    bits = (parts["mask"].unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1
    kept = bits.reshape(rows, -1)[:, :width].bool()
    out = torch.zeros(rows, width, dtype=parts["values"].dtype)
    out[kept] = parts["values"][:parts["values"].numel() - VALUE_PADDING]
    return out


def fits_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when the rows split into groups of `m` that each keep at most `n` nonzeros."""
    w = _matrix(weight)
    if m > 16 or n >= m or w.shape[1] % m:
        return False
    return bool(((w != 0).view(w.shape[0], -1, m).sum(-1) <= n).all())


def nm_pattern(weight: torch.Tensor):
    """(n, m) of the sparsest N:M pattern the weight fits, or None."""
    return next(((n, m) for n, m in NM_PATTERNS if fits_nm(weight, n, m)), None)


def to_nm(weight: torch.Tensor, n: int, m: int) -> dict:
    """{"values", "positions", "shape", "nm"} of a weight that fits N:M (see fits_nm)."""
    w = _matrix(weight).detach()
    if not fits_nm(w, n, m):
        raise PruneError(f"the weight {list(w.shape)} does not fit {n}:{m}")
    rows, width = w.shape
    groups = w.view(rows, -1, m)
    # the n positions kept in each group, nonzeros first, in column order within each kind
    order = torch.argsort((groups == 0).to(torch.int8) * m + torch.arange(m), dim=-1)[..., :n]
    order = order.sort(dim=-1).values
    values = torch.gather(groups, -1, order).reshape(rows, -1)
    nibbles = order.reshape(rows, -1).to(torch.uint8)
    if nibbles.shape[1] % 2:
        nibbles = torch.cat([nibbles, nibbles.new_zeros(rows, 1)], dim=1)
    positions = nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)
    return {"values": values.contiguous(), "positions": positions.contiguous(),
            "shape": torch.tensor([rows, width]), "nm": torch.tensor([n, m])}


def nm_dense(parts: dict) -> torch.Tensor:
    rows, width = parts["shape"].tolist()
    n, m = parts["nm"].tolist()
    kept = width // m * n
    nibbles = torch.stack([parts["positions"] & 15, parts["positions"] >> 4], dim=-1).reshape(rows, -1)[:, :kept]
    columns = torch.arange(kept).div(n, rounding_mode="floor") * m + nibbles.to(torch.int64)
    out = torch.zeros(rows, width, dtype=parts["values"].dtype)
    return out.scatter_(1, columns, parts["values"])


def nbytes(parts: dict) -> int:
    """Bytes of the tensors of a sparse form (what a kernel reads, what a file stores)."""
    return sum(t.numel() * t.element_size() for k, t in parts.items() if k not in ("shape", "nm"))


def _matrix(weight: torch.Tensor) -> torch.Tensor:
    if weight.dim() != 2:
        raise PruneError(f"a sparse form needs a 2-D weight, got shape {list(weight.shape)}")
    return weight
