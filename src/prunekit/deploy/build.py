"""Compile prunekit's own kernels (_kernels.c) once per machine and load them with ctypes.

The library is built with the system C compiler for this CPU (-march=native) into
$PRUNEKIT_HOME/kernels/, named by a hash of the source, the compiler and the CPU's flags, so
a cache shared between machines never runs code built for another CPU. `make setup` builds
it; otherwise the first use does (about a second).
Without a C compiler `available()` is False and to_sparse uses torch's kernels only.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from prunekit._utils.paths import home
from prunekit.errors import PruneError

SOURCE = Path(__file__).with_name("_kernels.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
SIGNATURES = {"pk_csr_i16": [_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _INT],
              "pk_csr_i32": [_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _INT],
              "pk_delta8": [_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _INT],
              "pk_bitmask": [_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _INT],
              "pk_nm": [_P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _INT, _INT, _INT]}


def _compiler():
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return sys.platform
    return next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")


def library_path() -> Path:
    compiler = _compiler()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + version.encode()
                         + _cpu_flags().encode()).hexdigest()[:16]
    return home() / "kernels" / f"pk_kernels_{key}.so"


def build() -> Path:
    """Compile the kernels if this machine has no build of the current source yet."""
    if _compiler() is None:
        raise PruneError("no C compiler (cc/gcc) found: prunekit's own sparse kernels need one; "
                         "torch's sparse kernels still work")
    path = library_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run([_compiler(), *FLAGS, str(SOURCE), "-o", str(tmp)], capture_output=True, text=True)
        if done.returncode:
            tmp.unlink(missing_ok=True)
            raise PruneError(f"compiling {SOURCE.name} failed: {done.stderr.strip().splitlines()[-1:]}")
        tmp.replace(path)  # atomic: a second process building at once finds a whole file
    return path


@lru_cache(maxsize=1)
def library():
    """The loaded kernels (ctypes.CDLL with typed functions); built on first use."""
    lib = ctypes.CDLL(str(build()))
    for name, args in SIGNATURES.items():
        getattr(lib, name).argtypes, getattr(lib, name).restype = args, ctypes.c_int
    return lib


@lru_cache(maxsize=1)
def available() -> bool:
    try:
        library()
    except (PruneError, OSError):
        return False
    return True
