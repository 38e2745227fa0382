"""The simple compressed form of a sparse tensor: nonzero values + a bitmask.

`pack(t)` -> {"values", "bitmask", "shape"}; the bitmask is exactly
`np.packbits(t.flatten() != 0)` (first element in the most significant bit), so the
form can be read without prunekit. Work is done in fixed-size chunks, so memory stays
proportional to the tensor (plus one chunk), whatever its size.
"""
import math

import torch

from prunekit.errors import PruneError

# A multiple of 8 so chunk boundaries fall on whole bitmask bytes.
_CHUNK = 1 << 22
_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def _packbits(flags: torch.Tensor) -> torch.Tensor:
    """np.packbits for a flat bool tensor (big-endian bit order, zero padded)."""
    pad = (-flags.numel()) % 8
    if pad:
        flags = torch.cat([flags, flags.new_zeros(pad)])
    weights = _BIT_WEIGHTS.to(flags.device)
    # uint8 sum of distinct powers of two never overflows 255.
    return (flags.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)


def _unpackbits(bits: torch.Tensor, count: int) -> torch.Tensor:
    """Inverse of _packbits: the first `count` flags of a flat uint8 tensor, as bool."""
    weights = _BIT_WEIGHTS.to(bits.device)
    flags = (bits.view(-1, 1) & weights) != 0
    return flags.view(-1)[:count]


def pack(t: torch.Tensor) -> dict:
    """{"values": nonzeros in row-major order, "bitmask": uint8, "shape": int64} for `t`."""
    if not isinstance(t, torch.Tensor):
        raise PruneError(f"pack expects a torch.Tensor, got {type(t).__name__}")
    flat = t.detach().reshape(-1)
    values, bits = [], []
    for start in range(0, flat.numel(), _CHUNK):
        chunk = flat[start:start + _CHUNK]
        nonzero = chunk != 0
        values.append(chunk[nonzero])
        bits.append(_packbits(nonzero))
    return {"values": torch.cat(values) if values else flat.new_empty(0),
            "bitmask": torch.cat(bits) if bits else torch.empty(0, dtype=torch.uint8, device=t.device),
            "shape": torch.tensor(list(t.shape), dtype=torch.int64)}


def _check(d) -> tuple:
    if not isinstance(d, dict) or not {"values", "bitmask", "shape"} <= set(d):
        raise PruneError("unpack expects the dict made by pack: keys 'values', 'bitmask', 'shape'")
    values, bits = d["values"].reshape(-1), d["bitmask"].reshape(-1)
    shape = [int(s) for s in d["shape"].reshape(-1).tolist()]
    numel = math.prod(shape)
    if bits.dtype != torch.uint8 or bits.numel() != (numel + 7) // 8:
        raise PruneError(f"bitmask must be {(numel + 7) // 8} uint8 bytes for shape {shape}, "
                         f"got {bits.numel()} of {bits.dtype}")
    return values, bits, shape, numel


def unpack(d: dict) -> torch.Tensor:
    """The dense tensor `pack` was made from (same dtype, shape and values)."""
    values, bits, shape, numel = _check(d)
    out = torch.zeros(numel, dtype=values.dtype, device=values.device)
    taken = 0
    for start in range(0, numel, _CHUNK):
        count = min(_CHUNK, numel - start)
        flags = _unpackbits(bits[start // 8:(start + count + 7) // 8], count).to(values.device)
        n = int(flags.sum())
        if taken + n > values.numel():
            raise PruneError(f"bitmask marks more nonzeros than the {values.numel()} values given")
        out[start:start + count][flags] = values[taken:taken + n]
        taken += n
    if taken != values.numel():
        raise PruneError(f"bitmask marks {taken} nonzeros but {values.numel()} values were given")
    return out.view(shape)


def packed_nbytes(t: torch.Tensor) -> int:
    """Bytes of pack(t)'s tensors, computed without packing."""
    nonzeros = int(torch.count_nonzero(t.detach())) if t.numel() else 0
    return nonzeros * t.element_size() + (t.numel() + 7) // 8 + 8 * t.dim()


def unpack_flags(bits: torch.Tensor, count: int) -> torch.Tensor:
    """The first `count` nonzero flags of a bitmask, as bool (in chunks, like unpack)."""
    return torch.cat([_unpackbits(bits[start // 8:(start + _CHUNK) // 8], min(_CHUNK, count - start))
                      for start in range(0, count, _CHUNK)]) if count else torch.zeros(0, dtype=torch.bool)
