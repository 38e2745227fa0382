"""Compile prunekit's own kernels (_kernels.c) once per machine and load them with ctypes.

The library is built with the C compiler ($CC, which may carry arguments: "ccache gcc",
"gcc -m64"; else cc or gcc) for this CPU (-march=native) into $PRUNEKIT_HOME/kernels/, named by
a hash of the source, the compiler command and version and the CPU's flags, so a cache shared
between machines never runs code built for another CPU. `make setup` builds it; otherwise the
first use does (about a second). Loading a model whose plan names none of our kernels builds nothing.

Whatever is loaded runs inside this process, so the cache is guarded:
- the directory is private: made with mode 0700, and refused where another user owns it or
  others may write to it (see kernel_dir);
- each build's sha256 is recorded beside it (pk_kernels_<key>.sha256); a library with no record,
  or whose bytes do not match theirs, is never loaded: it is built again;
- the bytes hashed are the bytes loaded: they are written to a fresh file of ours in the private
  directory and dlopen'ed from there, so the cached file changing after the check changes nothing;
- building, checking and cleaning run under a lock file: processes starting together all end
  with a whole, verified library (one compiles, the others wait and use its build);
- a new build removes the other builds more than a day old.
Where the kernels cannot be had (no compiler, a failed compile, an unsafe directory) `available()`
is False and `unavailable_reason()` says why, once per process: to_sparse then uses torch's
kernels only, and a saved model naming ours loads with those layers dense (choose.apply_kernels).
"""
import contextlib
import ctypes
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from prunekit._utils.atomic import atomic_path
from prunekit._utils.paths import home
from prunekit.errors import PruneError

try:
    import fcntl
except ImportError:  # Windows: no lock, hence no kernels (no cc there either)
    fcntl = None

SOURCE = Path(__file__).with_name("_kernels.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
# A day, not a minute: two installs of different versions sharing one cache then rebuild at most
# daily, where removing every other build at once would have them rebuild at each start.
OLD_SECONDS = 24 * 3600
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
SIGNATURES = {"pk_csr_i16": [_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _INT],
              "pk_csr_i32": [_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _INT],
              "pk_delta8": [_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _INT],
              "pk_bitmask": [_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _INT],
              "pk_nm": [_P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _INT, _INT, _INT]}


def _compiler() -> list:
    """The compiler command as words: $CC split as a shell would split it, else cc or gcc."""
    try:
        words = shlex.split(os.environ.get("CC", ""))
    except ValueError as error:
        raise PruneError(f"CC={os.environ['CC']!r} cannot be split into words: {error}") from None
    if not words:
        found = shutil.which("cc") or shutil.which("gcc")
        if found is None:
            raise PruneError("no C compiler (cc/gcc) found")
        return [found]
    if shutil.which(words[0]) is None:
        raise PruneError(f"CC={os.environ['CC']!r}: no program {words[0]!r} found")
    return words


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return sys.platform
    return next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")


def kernel_dir() -> Path:
    """$PRUNEKIT_HOME/kernels, private to this user (mode 0700).
    One that others may write to, or that another user owns, is refused rather than replaced by a
    fresh directory per process: anything in it, digest records included, may have been planted;
    a fresh directory would compile at every start and hide the problem; the error says the fix."""
    path = home() / "kernels"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()  # lstat: a symlink to a directory is not taken for one
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise PruneError(f"{path} is not a private directory (owner uid {info.st_uid}, mode "
                         f"{stat.filemode(info.st_mode)}): prunekit loads no code from it; remove it")
    if info.st_mode & 0o077:
        path.chmod(0o700)  # ours and writable by us alone (an older prunekit made it 0755): tightened
    return path


def library_path(compiler=None) -> Path:
    """Where the build of this source, compiler and CPU lives (built or not)."""
    compiler = compiler or _compiler()
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS + compiler).encode() + version.encode()
                         + _cpu_flags().encode()).hexdigest()[:16]
    return kernel_dir() / f"pk_kernels_{key}.so"


def build() -> Path:
    """Compile the kernels unless the cache holds a verified build of this source; its path."""
    return _verified_build()[0]


def _verified_build() -> tuple:
    """(path, bytes) of the build, checked against its digest record: the cached one, else a new one."""
    compiler = _compiler()
    path = library_path(compiler)
    with _locked(path.parent):
        data = _verified_bytes(path)
        if data is None:
            _compile(path, compiler)
            _remove_old(path)
            data = _verified_bytes(path)
    if data is None:
        raise PruneError(f"{path} does not match the digest recorded when it was built")
    return path, data


@contextlib.contextmanager
def _locked(directory: Path):
    """Held while checking, building and cleaning: another process waits, then finds the build."""
    if fcntl is None:
        raise PruneError("no file locking (fcntl) on this platform")
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _record(path: Path) -> Path:
    return path.with_suffix(".sha256")


def _verified_bytes(path: Path):
    """The library's bytes if prunekit built them: their sha256 is the one recorded at build time.
    None where the library or its record is missing, or they differ (a build is then made)."""
    try:
        data, recorded = _read_own(path), _read_own(_record(path)).strip()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest().encode() == recorded else None


def _read_own(path: Path) -> bytes:
    """A regular file's bytes, not through a symlink, from a file of this user's."""
    with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise OSError(f"{path} is not a regular file of ours")
        return file.read()


def _compile(path: Path, compiler: list) -> None:
    """Build into a temporary file beside `path`, record its digest, then move it in place
    (a rename: nothing ever reads a half-written library)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="pk_kernels_", suffix=".tmp")
    os.close(fd)
    try:
        done = subprocess.run([*compiler, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise PruneError(f"compiling {SOURCE.name} with {shlex.join(compiler)} failed: {last}")
        _write_atomic(_record(path), hashlib.sha256(Path(tmp).read_bytes()).hexdigest().encode())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _remove_old(current: Path) -> None:
    """Remove other builds, their records and leftovers of crashed builds, over a day old."""
    cutoff = time.time() - OLD_SECONDS
    for old in current.parent.glob("pk_kernels_*"):
        if old.stem != current.stem:  # a build and its record share the stem
            with contextlib.suppress(OSError):  # another process removed it first
                if old.lstat().st_mtime < cutoff:
                    old.unlink()


def _load_bytes(directory: Path, data: bytes):
    """dlopen exactly `data`: written to a new file (O_EXCL, ours) in the private directory."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="pk_kernels_", suffix=".tmp")
    try:
        with open(fd, "wb") as file:
            file.write(data)
        return ctypes.CDLL(tmp)
    finally:
        os.unlink(tmp)  # the loaded mapping stays; no file is left behind


@lru_cache(maxsize=1)
def loaded() -> tuple:
    """(library, None) once the kernels load, or (None, why not): built on the first call, tried
    once per process. The library is a ctypes.CDLL with typed functions."""
    try:
        path, data = _verified_build()
        lib = _load_bytes(path.parent, data)
    except (PruneError, OSError) as error:
        return None, str(error)
    for name, args in SIGNATURES.items():
        getattr(lib, name).argtypes, getattr(lib, name).restype = args, ctypes.c_int
    return lib, None


def library():
    """The loaded kernels; PruneError where they cannot be built or loaded."""
    lib, why = loaded()
    if lib is None:
        raise PruneError(f"prunekit's C kernels are unavailable: {why}")
    return lib


def available() -> bool:
    return loaded()[0] is not None


def unavailable_reason():
    """Why the kernels cannot be had here (a sentence), or None where they load."""
    return loaded()[1]
