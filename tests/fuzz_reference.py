"""Reference decoders for the fuzzer (tests/fuzzing.py): one per stored form and per kernel form,
written from the formats' descriptions with plain Python loops, sharing no code with prunekit.

Each returns the dense matrix a form means, or raises Invalid where the form has no single
meaning: an index outside the weight, two values for one position, counts that disagree, a part
missing or of a type the format does not have. It is deliberately lenient about what is merely
unusual (unsorted but distinct columns, a wider index dtype): prunekit may refuse those (counted
as "refused though valid", not a bug), but whatever prunekit accepts must decode to this.
"""
import torch

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class Invalid(Exception):
    """The input has no single meaning; the message says why."""


def need(condition, why: str) -> None:
    if not condition:
        raise Invalid(why)


def _tensor(parts, key, dtypes, dim):
    t = parts.get(key)
    need(isinstance(t, torch.Tensor), f"{key} missing")
    need(t.dtype in dtypes, f"{key} is {t.dtype}")
    need(t.dim() == dim, f"{key} has {t.dim()} dims")
    return t


def _rowptr(parts, rows, total):
    rp = _tensor(parts, "rowptr", INTS, 1).tolist()
    need(len(rp) == rows + 1, "rowptr length")
    need(rp[0] == 0 and rp[-1] == total, "rowptr ends")
    need(all(a <= b for a, b in zip(rp, rp[1:])), "rowptr decreases")
    return rp


def _build(rows, width, entries, values, scattered=False):
    """The matrix of `values` (float tensor, one per entry) at (row, col) of each entry; zeros
    (bridges, N:M padding) place nothing, and a position given two nonzero values is invalid (a
    kernel would add them, a decode keep one). `scattered`: a position given two entries is
    invalid where either is nonzero (a scatter may keep the zero)."""
    flat = values.reshape(-1)
    nonzero = (flat != 0).tolist()  # NaN counts as a value
    seen = {}
    for k, (r, c) in enumerate(entries):
        need(0 <= r < rows and 0 <= c < width, f"entry {k} at ({r}, {c}) outside [{rows}, {width}]")
        if (r, c) in seen:
            first = nonzero[seen[(r, c)]]
            need(not ((nonzero[k] or first) if scattered else (nonzero[k] and first)), f"two values at ({r}, {c})")
        if (r, c) not in seen or nonzero[k]:
            seen[(r, c)] = k
    out = torch.zeros(rows, width, dtype=flat.dtype)
    for (r, c), k in seen.items():
        if nonzero[k]:
            out[r, c] = flat[k]
    return out


def _values(parts, names, rows, row_of, dtype, dim=1):
    """The kept values as floats: stored ones, or int8 ones times their row's float32 scale."""
    if "values_int8" in parts:
        need(set(parts) == names | {"values_int8", "scale"}, f"parts {sorted(parts)}")
        q = _tensor(parts, "values_int8", (torch.int8,), dim)
        scale = _tensor(parts, "scale", (torch.float32,), 1)
        need(scale.numel() == rows, "one scale per row")
        rows_of = torch.tensor(row_of(q.numel()), dtype=torch.int64)
        need(rows_of.numel() == q.numel(), "values per row")
        return (q.reshape(-1).float() * scale[rows_of]).reshape(q.shape).to(dtype)
    need(set(parts) == names | {"values"}, f"parts {sorted(parts)}")
    return _tensor(parts, "values", FLOATS, dim)


def matrix_of(shape):
    """(rows, width) of the matrix a tensor of `shape` is stored as: (shape[0], the rest)."""
    numel = 1
    for s in shape:
        numel *= s
    rows = shape[0] if len(shape) >= 2 else 1
    return rows, (numel // rows if rows else 0)


def _flat_bitmask(parts, rows, width, dtype):
    numel = rows * width
    bits = _tensor(parts, "bitmask", (torch.uint8,), 1).tolist()
    need(len(bits) == (numel + 7) // 8, "bitmask length")
    flags = [(bits[i >> 3] >> (7 - (i & 7))) & 1 for i in range(numel)]  # np.packbits order
    where = [i for i, f in enumerate(flags) if f]
    values = _values(parts, {"bitmask"}, rows, lambda n: [i // width for i in where], dtype)
    need(values.numel() == len(where), "one value per set bit")
    return _build(rows, width, [(i // width, i % width) for i in where], values)


def _columns(cols):
    need(cols.dtype in (torch.int16, torch.int32, torch.int64), f"cols are {cols.dtype}")
    out = cols.tolist()
    return [c & 0xFFFF for c in out] if cols.dtype == torch.int16 else out  # int16: unsigned


def _row_of(rp):
    return [r for r in range(len(rp) - 1) for _ in range(rp[r + 1] - rp[r])]


def _csr(parts, rows, width, dtype, extra=frozenset()):
    cols = _columns(_tensor(parts, "cols", INTS, 1))
    rp = _rowptr(parts, rows, len(cols))
    values = _values(parts, {"rowptr", "cols"} | extra, rows, lambda n: _row_of(rp), dtype)
    need(values.numel() == len(cols), "one value per column index")
    return _build(rows, width, list(zip(_row_of(rp), cols)), values)


def _delta8(parts, rows, width, dtype, extra=frozenset()):
    deltas = _tensor(parts, "deltas", (torch.uint8,), 1).tolist()
    rp = _rowptr(parts, rows, len(deltas))
    values = _values(parts, {"rowptr", "deltas"} | extra, rows, lambda n: _row_of(rp), dtype)
    need(values.numel() == len(deltas), "one value per step")
    entries = []
    for r in range(rows):
        col = 0
        for k in range(rp[r], rp[r + 1]):
            col += deltas[k]
            need(col < width, f"step to column {col}")  # read even for a bridge's zero value
            entries.append((r, col))
    return _build(rows, width, entries, values)


def _nm(parts, rows, width, dtype, extra=frozenset()):
    nm = _tensor(parts, "nm", INTS, 1).tolist()
    need(len(nm) == 2, "nm has two numbers")
    n, m = nm
    need(1 <= n <= 16 and 1 <= m <= 16 and width % m == 0, f"pattern {n}:{m} for width {width}")
    kept = width // m * n
    values = _values(parts, {"nm", "positions"} | extra, rows, lambda c: [r for r in range(rows) for _ in range(kept)],
                     dtype, dim=2)
    need(tuple(values.shape) == (rows, kept), "values shape")
    pos = _tensor(parts, "positions", (torch.uint8,), 2)
    need(tuple(pos.shape) == (rows, (kept + 1) // 2), "positions shape")
    pos = pos.tolist()
    entries = []
    for r in range(rows):
        for j in range(kept):
            p = pos[r][j >> 1] >> 4 if j & 1 else pos[r][j >> 1] & 15  # first in the low nibble
            need(p < m, f"position {p} of {m}")
            entries.append((r, j // n * m + p))
    return _build(rows, width, entries, values, scattered=True)


def checkpoint(form, parts, shape, dtype=torch.float32):
    """The tensor of `shape` a pk.save form stores, or Invalid."""
    need(isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape), "shape")
    rows, width = matrix_of(shape)
    need(rows * width <= 1 << 22, "larger than a fuzz seed")  # a crafted size: checked elsewhere
    decode = {"bitmask": _flat_bitmask, "csr16": _csr, "csr32": _csr, "delta8": _delta8, "nm": _nm}[form]
    return decode(parts, rows, width, dtype).reshape(shape)


def _row_bitmask(parts, rows, width):
    """The kernels' row bitmask: bit c % 8 of byte c / 8, rows padded to 64 bits, values in row
    order then 8 of padding, rowptr the running count (the kernel reads values from it)."""
    stride = (width + 63) // 64 * 8
    mask = _tensor(parts, "mask", (torch.uint8,), 2)
    need(tuple(mask.shape) == (rows, stride), "mask shape")
    mask = mask.tolist()
    values = _tensor(parts, "values", FLOATS, 1)
    rp = _rowptr(parts, rows, values.numel() - 8)
    entries = []
    for r in range(rows):
        cols = [c for c in range(stride * 8) if (mask[r][c >> 3] >> (c & 7)) & 1]
        need(rp[r + 1] - rp[r] == len(cols), "rowptr is not the running count")
        entries += [(r, c) for c in cols]  # a column past the width is invalid in _build
    return _build(rows, width, entries, values[:values.numel() - 8])


def kernel(name, parts, rows, width):
    """The weight (rows, width) a sparse layer's buffers mean for kernel `name`, or Invalid."""
    parts = dict(parts)
    shape = parts.pop("shape", None)
    need(shape is None or (isinstance(shape, torch.Tensor) and shape.dtype in INTS and shape.tolist() == [rows, width]),
         "recorded shape")
    if name == "bitmask":
        return _row_bitmask(parts, rows, width)
    if name == "nm":
        return _nm(parts, rows, width, None)
    if name == "delta8":
        return _delta8(parts, rows, width, None)
    return _csr(parts, rows, width, None)  # csr16, csr32, torch-csr
