"""The compressed forms pk.save(format="compressed") chooses between, per tensor: whichever of
bitmask, CSR with 16- or 32-bit column indices, CSR with 8-bit column steps (delta8), packed
N:M and dense takes fewest bytes. Per weight at density d: bitmask 4d + 1/8 bytes, delta8 5d,
CSR-16 6d: delta8 is smallest past 87.5 % sparse, the bitmask below.

Packed N:M spends 4 bits per kept value, 4N/M bits per weight, against the bitmask's 1: it is
smaller only below 1 in 4 kept (1:8, 1:16); 2:4 is stored as a bitmask (2.125 bytes per weight
against 2.25). The kernels still run 2:4 from the packed form, built at load.

A tensor of any shape is stored as the matrix (shape[0], rest). Each form is exact; with
`int8=True` the kept values are stored as int8 with one float32 scale per row (symmetric,
round to nearest), so the file is about 4x smaller again and loads to those rounded values.
"""
import torch

from prunekit.deploy import form_checks, formats
from prunekit.errors import PruneError
from prunekit.serialization import sparse_format

FORMS = ("bitmask", "csr16", "csr32", "delta8", "nm")


def _matrix(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.flatten(1) if tensor.dim() >= 2 else tensor.reshape(1, -1)  # flatten: a (0, n) tensor too


def _candidates(matrix: torch.Tensor) -> dict:
    """{form: its tensors as stored} of every form that can hold the matrix (one CSR
    conversion serves CSR-32, CSR-16 and delta8)."""
    csr = formats.to_csr(matrix, index_bits=32)
    found = {"bitmask": sparse_format.pack(matrix), "csr32": csr, "delta8": formats.to_delta8(matrix, csr)}
    if matrix.shape[1] <= formats.INDEX16_LIMIT:
        found["csr16"] = formats.with_16bit_indices(csr)
    pattern = formats.nm_pattern(matrix)
    if pattern:
        found["nm"] = formats.to_nm(matrix, *pattern)
    return {form: _as_stored(parts) for form, parts in found.items()}


def _as_stored(parts: dict) -> dict:
    """The tensors a file keeps: the shape is in the plan, and row pointers are int32 where the
    kept values allow."""
    stored = {k: v for k, v in parts.items() if k != "shape"}
    if "rowptr" in stored and stored["values"].numel() < 2**31:
        stored["rowptr"] = stored["rowptr"].to(torch.int32)
    return stored


def quantize_rows(values: torch.Tensor, rows: torch.Tensor, count: int) -> dict:
    """int8 values and one scale for each of `count` rows (rows keeping nothing too); `rows`
    gives each value's row."""
    peak = torch.zeros(count).scatter_reduce_(0, rows, values.abs().float(), "amax")
    scale = torch.where(peak > 0, peak / 127, torch.ones_like(peak))
    return {"q": torch.round(values / scale[rows]).clamp_(-127, 127).to(torch.int8), "scale": scale}


def _rows_of(form: str, parts: dict, rows: int, width: int) -> torch.Tensor:
    """Each stored value's row, in storage order."""
    if form.startswith("csr") or form == "delta8":
        return torch.repeat_interleave(torch.arange(rows), parts["rowptr"].to(torch.int64).diff())
    if form == "nm":
        return torch.arange(rows).repeat_interleave(parts["values"].shape[1])
    flags = sparse_format.unpack_flags(parts["bitmask"], rows * width)
    return flags.nonzero()[:, 0].div(max(width, 1), rounding_mode="floor")


def encode(tensor: torch.Tensor, int8: bool = False):
    """(form, {part: tensor}) of the smallest form, or None where dense is smallest."""
    matrix = _matrix(tensor)
    best, best_parts = None, None
    for form, parts in _candidates(matrix).items():
        if int8:
            parts = _as_int8(form, parts, *matrix.shape)
        if best is None or formats.nbytes(parts) < formats.nbytes(best_parts):
            best, best_parts = form, parts
    dense = tensor.numel() * tensor.element_size()
    return (best, best_parts) if formats.nbytes(best_parts) < dense else None


def _as_int8(form, parts, rows, width) -> dict:
    rows_of = _rows_of(form, parts, rows, width)
    values = parts.pop("values")
    q = quantize_rows(values.reshape(-1), rows_of, rows)
    return {**parts, "values_int8": q["q"].reshape(values.shape), "scale": q["scale"]}


_PARTS = {"bitmask": {"values", "bitmask"}, "csr16": {"rowptr", "cols", "values"},
          "csr32": {"rowptr", "cols", "values"}, "delta8": {"rowptr", "deltas", "values"},
          "nm": {"values", "positions", "nm"}}
_INDEX = {"csr16": torch.int16, "csr32": torch.int32}


def check(form: str, parts: dict, rows: int, width: int) -> None:
    """Every invariant of a stored form (form_checks), and its int8 values and scales, before
    torch reads it: a PruneError saying what is wrong (the caller names the file and tensor)."""
    names = _PARTS[form] - {"values"} | ({"values_int8", "scale"} if "values_int8" in parts else {"values"})
    if set(parts) != names:
        raise PruneError(f"its parts are {sorted(parts)}, a {form} form has {sorted(names)}")
    if form in _INDEX and parts["cols"].dtype != _INDEX[form]:
        raise PruneError(f"its column indices are {str(parts['cols'].dtype)[6:]}, a {form} form's are "
                         f"{str(_INDEX[form])[6:]}")
    if "values_int8" in parts:
        q, scale = parts["values_int8"], parts["scale"]
        if q.dtype != torch.int8 or scale.dtype != torch.float32 or scale.shape != (rows,):
            raise PruneError(f"its int8 values and scales are {str(q.dtype)[6:]} and {str(scale.dtype)[6:]} "
                             f"{list(scale.shape)}, not int8 and float32 [{rows}]")
        if not bool(torch.isfinite(scale).all()):  # pk.save writes finite scales; 0 * inf would be a NaN
            raise PruneError("its int8 scales are not all finite")
        parts = {**parts, "values": q.float()}  # the structure checked as the values it decodes to
    if form == "bitmask":
        form_checks.check_bitmask(parts, rows * width)
    else:
        {"csr16": form_checks.check_csr, "csr32": form_checks.check_csr, "delta8": form_checks.check_delta8,
         "nm": form_checks.check_nm}[form](parts, rows, width)


def decode(form: str, parts: dict, shape: list, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The tensor `encode` stored, of `shape`; int8 values come back as `dtype`. Checked first:
    a damaged form is a PruneError, never a wrong tensor or a crash."""
    parts = dict(parts)
    rows = shape[0] if len(shape) >= 2 else 1
    numel = 1
    for size in shape:
        numel *= size
    width = numel // rows if rows else 0
    check(form, parts, rows, width)
    if "values_int8" in parts:
        q, scale = parts.pop("values_int8"), parts.pop("scale")
        rows_of = _rows_of(form, {**parts, "values": q}, rows, width)
        parts["values"] = (q.reshape(-1).float() * scale[rows_of]).reshape(q.shape).to(dtype)
    if form == "bitmask":
        matrix = sparse_format.unpack({**parts, "shape": torch.tensor([rows, width])})
    elif form.startswith("csr"):
        matrix = formats.csr_dense({**parts, "shape": torch.tensor([rows, width])})
    elif form == "delta8":
        matrix = formats.delta8_dense({**parts, "rowptr": parts["rowptr"].to(torch.int64),
                                       "shape": torch.tensor([rows, width])})
    else:
        matrix = formats.nm_dense({**parts, "shape": torch.tensor([rows, width])})
    return matrix.reshape(shape)
