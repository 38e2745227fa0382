"""The kernels a sparse Linear can run, by name: each turns a weight into the tensors it keeps
(`pack`) and computes y = x W^T + b from them (`run`, x of shape (batch, in), float32).

- dense: torch's own matmul (MKL/oneDNN), the reference every choice is timed against.
- torch-csr: torch's CSR tensor with 32-bit indices (MKL sparse BLAS).
- csr16, csr32: prunekit's CSR kernels (deploy/_kernels.c), 16- or 32-bit column indices.
- delta8: prunekit's CSR with 8-bit column steps (5 bytes per kept weight, against 6).
- bitmask: prunekit's row bitmask + values (4 bytes per kept weight + 1 bit per weight: the
  fewest below 87.5 % sparse), expanded 8 columns at a time with no gathers.
- nm: prunekit's packed N:M kernel, for weights with at most N nonzeros in every M.
"""
import functools

import torch
import torch.nn.functional as F

from prunekit.deploy import build, form_checks, formats
from prunekit.errors import PruneError

ORDER = ("dense", "torch-csr", "csr16", "csr32", "delta8", "bitmask", "nm")


ONE_THREAD = "/1t"  # a kernel spec "delta8/1t": our kernel on one thread


def resolve(spec: str):
    """(kernel, threads) of a spec: "delta8" runs on torch's thread count, "delta8/1t" on one.
    Our kernels come in both because which is faster depends on the machine and the layer: in
    one script here, with a torch op before each call, two threads were several times slower
    than one (not reproduced in a plain loop, where two threads ran twice as fast)."""
    name, one, rest = spec.partition(ONE_THREAD)
    if name not in KERNELS or rest or (one and not isinstance(KERNELS[name], _OwnKernel)):
        raise PruneError(f"unknown kernel {spec!r}: choose from {', '.join(specs(ORDER))}")
    return KERNELS[name], 1 if one else None


def specs(names) -> list:
    """Every spec of the named kernels: ours also on one thread where torch uses more."""
    out = []
    for name in names:
        out.append(name)
        if isinstance(KERNELS.get(name), _OwnKernel) and torch.get_num_threads() > 1:
            out.append(name + ONE_THREAD)
    return out


class CCall:
    """A C kernel bound to a weight's tensors: called (x, bias) -> y, with the tensors' pointers
    taken once (a call costs microseconds, which a small layer feels). It holds the tensors,
    which keeps the pointers valid, and refuses to be pickled (its pointers mean nothing
    elsewhere): a sparse layer drops it when copied or pickled and binds again."""

    def __init__(self, fn, weight_parts, out: int, extra=(), threads=None):
        self.fn, self.keep, self.out, self.extra, self.threads = fn, weight_parts, out, extra, threads
        self.pointers = [t.data_ptr() for t in weight_parts]  # plain ints: ctypes passes them as void*

    def __call__(self, x, bias):
        batch, width = x.shape
        y = torch.empty(batch, self.out)
        if self.fn(*self.pointers, x.data_ptr(), None if bias is None else bias.data_ptr(), y.data_ptr(), batch, width,
              self.out, *self.extra, self.threads or torch.get_num_threads()):
            raise MemoryError("prunekit's sparse kernel could not allocate its input tiles")
        return y

    def __getstate__(self):
        raise TypeError("a bound sparse kernel holds raw pointers: copy or pickle the layer, which binds again")


class _Kernel:
    """What every kernel shares: `check` (the form's invariants, and the shape the form
    records: a PruneError where they fail) and `native` (the tensors are exactly what `run`
    reads: where not, after a dtype conversion, a layer runs the weight dense)."""
    form_check = staticmethod(form_checks.check_dense)
    dtypes: dict = {}

    def check(self, parts, rows, width):
        self.form_check(parts, rows, width)
        if "shape" in parts:
            form_checks.check_shape_part(parts, rows, width)

    def native(self, parts) -> bool:
        return form_checks.exact_dtypes(parts, self.dtypes)


class _TorchKernel(_Kernel):
    """A kernel torch runs, on torch's own threads: binding only holds the tensors."""

    @classmethod
    def bind(cls, parts, threads=None):
        return functools.partial(cls.run, parts)


class _OwnKernel(_Kernel):
    """One of prunekit's C kernels: running binds it (pointers, threads) and calls it."""

    def run(self, parts, x, bias, threads=None):
        return self.bind(parts, threads)(x, bias)


class Dense(_TorchKernel):
    name = "dense"
    dtypes = {"weight": torch.float32}

    @staticmethod
    def fits(weight):
        return True

    @staticmethod
    def pack(weight):
        return {"weight": weight.detach().contiguous()}

    @staticmethod
    def run(parts, x, bias, threads=None):
        return F.linear(x, parts["weight"], bias)

    @staticmethod
    def dense(parts):
        return parts["weight"]


class TorchCSR(_TorchKernel):
    name = "torch-csr"
    form_check = staticmethod(form_checks.check_csr)
    dtypes = {"rowptr": torch.int32, "cols": torch.int32, "values": torch.float32}

    @staticmethod
    def fits(weight):
        return True

    @staticmethod
    def pack(weight):
        parts = formats.to_csr(weight, index_bits=32)
        parts["rowptr"] = parts["rowptr"].to(torch.int32)  # torch wants both index tensors alike
        return parts

    @staticmethod
    def run(parts, x, bias, threads=None):
        rows, width = parts["shape"].tolist()  # a view of the stored tensors: no copy, no check
        matrix = torch.sparse_csr_tensor(parts["rowptr"], parts["cols"], parts["values"], (rows, width),
                                         check_invariants=False)
        y = torch.sparse.mm(matrix, x.t()).t()
        return y + bias if bias is not None else y

    dense = staticmethod(formats.csr_dense)


class OwnRows(_OwnKernel):
    """Our row-compressed kernels: CSR with 16- or 32-bit column indices, delta8 (CSR with 8-bit
    steps between kept columns) and the row bitmask. All keep row pointers, a part saying where
    the kept values sit (`index`) and the values; `pack` and `dense` convert to and from a weight."""

    def __init__(self, name, index, function, pack, dense, form_check, index_dtype):
        self.name, self.index, self.function = name, index, function
        self.pack, self.dense, self.form_check = pack, dense, form_check
        self.dtypes = {"rowptr": torch.int64, index: index_dtype, "values": torch.float32}

    def fits(self, weight):
        return build.available() and (self.name != "csr16" or weight.shape[1] <= formats.INDEX16_LIMIT)

    def bind(self, parts, threads=None):
        return CCall(getattr(build.library(), self.function), [parts["rowptr"], parts[self.index], parts["values"]],
                     parts["rowptr"].numel() - 1, threads=threads)


class PackedNM(_OwnKernel):
    name = "nm"
    form_check = staticmethod(form_checks.check_nm)
    dtypes = {"values": torch.float32, "positions": torch.uint8}

    @staticmethod
    def fits(weight):
        """A weight pruned to N:M: an unstructured one may fit 8:16 while keeping a tenth, and
        would run half its slots on zeros."""
        pattern = build.available() and formats.nm_pattern(weight)
        return bool(pattern) and float((weight != 0).float().mean()) >= 0.75 * pattern[0] / pattern[1]

    @staticmethod
    def pack(weight):
        return formats.to_nm(weight, *formats.nm_pattern(weight))

    @staticmethod
    def bind(parts, threads=None):
        out, kept = parts["values"].shape
        return CCall(build.library().pk_nm, [parts["values"], parts["positions"]], out, extra=(kept, *parts["nm"].tolist()),
                     threads=threads)

    dense = staticmethod(formats.nm_dense)


def _csr(index_bits):
    return lambda weight: formats.to_csr(weight, index_bits=index_bits)


KERNELS = {k.name: k for k in (
    Dense(), TorchCSR(),
    OwnRows("csr16", "cols", "pk_csr_i16", _csr(16), formats.csr_dense, form_checks.check_csr, torch.int16),
    OwnRows("csr32", "cols", "pk_csr_i32", _csr(32), formats.csr_dense, form_checks.check_csr, torch.int32),
    OwnRows("delta8", "deltas", "pk_delta8", formats.to_delta8, formats.delta8_dense, form_checks.check_delta8,
            torch.uint8),
    OwnRows("bitmask", "mask", "pk_bitmask", formats.to_bitmask, formats.bitmask_dense,
            form_checks.check_row_bitmask, torch.uint8),
    PackedNM())}
