"""Every invariant of every sparse form, checked before torch or C reads the data.

One function per form, shared by the compressed-checkpoint loader (serialization.codecs) and
the sparse layers (deploy.sparse_layer, each time a kernel is bound): a form that passes
decodes to exactly what the kernels compute from it, and no index points outside the weight.
A file or a state dict is input like any other: a crafted row pointer must not become a read
past a buffer in C. Each check is vectorised and linear in the stored values; it raises a
PruneError saying what is wrong, and the caller names the file or layer.

The checks take the broad set of dtypes a file may hold (row pointers int32 or int64, values
in any float dtype); `exact_dtypes` adds what one kernel's C code reads.
"""
import torch

from prunekit.deploy.formats import INDEX16_LIMIT, VALUE_PADDING, delta8_columns
from prunekit.errors import PruneError

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_INDEX = (torch.int32, torch.int64)
_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def _need(condition, message: str) -> None:
    if not condition:
        raise PruneError(message)


def _part(parts: dict, key: str, dtypes, dim: int) -> torch.Tensor:
    tensor = parts.get(key)
    _need(isinstance(tensor, torch.Tensor), f"its part {key!r} is missing")
    _need(tensor.dtype in dtypes,
          f"its part {key!r} is {str(tensor.dtype)[6:]}, not {' or '.join(str(d)[6:] for d in dtypes)}")
    _need(tensor.dim() == dim, f"its part {key!r} has {tensor.dim()} dimensions, not {dim}")
    return tensor


def _rowptr(parts: dict, rows: int, total: int) -> torch.Tensor:
    """Row pointers: rows + 1 of them, from 0, never decreasing, ending at the stored count."""
    rowptr = _part(parts, "rowptr", _INDEX, 1).to(torch.int64)
    _need(rowptr.numel() == rows + 1, f"it has {rowptr.numel()} row pointers for {rows} rows")
    _need(int(rowptr[0]) == 0, f"its row pointers start at {int(rowptr[0])}, not 0")
    _need(bool((rowptr.diff() >= 0).all()), "its row pointers decrease")
    _need(int(rowptr[-1]) == total, f"its row pointers end at {int(rowptr[-1])}, not at the {total} values stored")
    return rowptr


def _row_starts(rowptr: torch.Tensor, total: int) -> torch.Tensor:
    """True at each stored entry that is the first of its row."""
    starts = torch.zeros(total, dtype=torch.bool)
    starts[rowptr[:-1][rowptr.diff() > 0]] = True
    return starts


def check_csr(parts: dict, rows: int, width: int) -> None:
    """CSR: column indices (int16 read as unsigned, or int32) in [0, width), increasing along
    each row (no column twice: the kernels would add both, a decode keep one)."""
    values = _part(parts, "values", FLOATS, 1)
    cols = _part(parts, "cols", (torch.int16, torch.int32), 1)
    _need(cols.numel() == values.numel(), f"it has {cols.numel()} column indices for {values.numel()} values")
    rowptr = _rowptr(parts, rows, values.numel())
    cols = cols.to(torch.int64) % INDEX16_LIMIT if cols.dtype == torch.int16 else cols.to(torch.int64)
    if cols.numel():
        _need(int(cols.min()) >= 0 and int(cols.max()) < width,
              f"a column index ({int(cols.max())} or {int(cols.min())}) is outside the row's {width} columns")
        later = ~_row_starts(rowptr, cols.numel())[1:]
        _need(bool((cols.diff()[later] > 0).all()), "its column indices do not increase along a row")


def check_delta8(parts: dict, rows: int, width: int) -> None:
    """CSR with 8-bit column steps: every row's steps stay inside the row, and a column holds
    at most one nonzero (a step of 0 only after a bridge entry, whose value is 0)."""
    values = _part(parts, "values", FLOATS, 1)
    deltas = _part(parts, "deltas", (torch.uint8,), 1)
    _need(deltas.numel() == values.numel(), f"it has {deltas.numel()} column steps for {values.numel()} values")
    rowptr = _rowptr(parts, rows, values.numel())
    if not values.numel():
        return
    cols = delta8_columns(rowptr, deltas)
    _need(int(cols.max()) < width, f"its column steps run to column {int(cols.max())}, past the row's {width}")
    repeat = (deltas[1:] == 0) & ~_row_starts(rowptr, values.numel())[1:]
    _need(not bool((repeat & (values[:-1] != 0)).any()), "two values share one column of a row")


def check_row_bitmask(parts: dict, rows: int, width: int) -> None:
    """The kernels' row bitmask: (rows, width padded to 64 bits) of mask bytes, no bit set past
    the width, row pointers equal to the running count of set bits, and the values padded."""
    values = _part(parts, "values", FLOATS, 1)
    mask = _part(parts, "mask", (torch.uint8,), 2)
    stride = (width + 63) // 64 * 8
    _need(tuple(mask.shape) == (rows, stride), f"its mask is {list(mask.shape)}, not [{rows}, {stride}]")
    _need(values.numel() >= VALUE_PADDING, f"its values lack the {VALUE_PADDING} of padding")
    rowptr = _rowptr(parts, rows, values.numel() - VALUE_PADDING)
    whole, rest = divmod(width, 8)
    if rest:  # the last partial byte's high bits lie past the width
        _need(not bool((mask[:, whole] >> rest).any()), "its mask marks columns past the row's width")
    _need(not bool(mask[:, whole + (rest > 0):].any()), "its mask marks columns past the row's width")
    _need(torch.equal(_POPCOUNT[mask.to(torch.int64)].sum(1), rowptr.diff()),
          "its row pointers disagree with the mask's count of kept values")


def check_nm(parts: dict, rows: int, width: int) -> None:
    """Packed N:M: 1 <= n < m <= 16 with m dividing the width, (rows, width / m * n) values,
    and in each group n positions below m, increasing."""
    nm = _part(parts, "nm", _INDEX, 1)
    _need(nm.numel() == 2, f"its pattern has {nm.numel()} numbers, not 2 (n, m)")
    n, m = nm.tolist()
    _need(1 <= n < m <= 16, f"its pattern {n}:{m} is not one of 1 <= n < m <= 16")
    _need(width % m == 0, f"its pattern {n}:{m} does not divide the row's {width} columns")
    kept = width // m * n
    values = _part(parts, "values", FLOATS, 2)
    _need(tuple(values.shape) == (rows, kept), f"its values are {list(values.shape)}, not [{rows}, {kept}]")
    positions = _part(parts, "positions", (torch.uint8,), 2)
    _need(tuple(positions.shape) == (rows, (kept + 1) // 2),
          f"its positions are {list(positions.shape)}, not [{rows}, {(kept + 1) // 2}]")
    nibbles = torch.stack([positions & 15, positions >> 4], dim=-1).reshape(rows, -1)[:, :kept]
    if nibbles.numel():
        _need(int(nibbles.max()) < m, f"a position ({int(nibbles.max())}) is outside its group of {m}")
        groups = nibbles.to(torch.int16).view(rows, -1, n)
        _need(bool((groups.diff(dim=-1) > 0).all()), "its positions repeat or go back within a group")


def check_bitmask(parts: dict, numel: int) -> None:
    """The checkpoints' flat bitmask (np.packbits order): one bit per element, as many values as
    set bits."""
    values = _part(parts, "values", FLOATS, 1)
    bits = _part(parts, "bitmask", (torch.uint8,), 1)
    _need(bits.numel() == (numel + 7) // 8, f"its bitmask has {bits.numel()} bytes for {numel} elements, "
                                            f"not {(numel + 7) // 8}")
    set_bits = int(_POPCOUNT[bits.to(torch.int64)].sum())
    if numel % 8:  # bits past the last element, at the low end of the last byte, do not count
        set_bits -= _POPCOUNT[int(bits[-1]) & ((1 << (8 - numel % 8)) - 1)].item()
    _need(set_bits == values.numel(), f"its bitmask marks {set_bits} values, {values.numel()} are stored")


def check_dense(parts: dict, rows: int, width: int) -> None:
    weight = _part(parts, "weight", FLOATS, 2)
    _need(tuple(weight.shape) == (rows, width), f"its weight is {list(weight.shape)}, not [{rows}, {width}]")


def check_shape_part(parts: dict, rows: int, width: int) -> None:
    """The (rows, width) a kernel's form records beside its tensors (what `dense` reads)."""
    shape = _part(parts, "shape", _INDEX, 1)
    _need(shape.tolist() == [rows, width], f"its recorded shape {shape.tolist()} is not [{rows}, {width}]")


def exact_dtypes(parts: dict, dtypes: dict) -> bool:
    """True when each named part has exactly the dtype a kernel's C code reads, is contiguous
    and on the CPU (a check that comes after the form's own)."""
    return all(parts[k].dtype == d and parts[k].is_contiguous() and parts[k].device.type == "cpu"
               for k, d in dtypes.items())
