"""Atomic writes: a file or a folder is written under a temporary name beside its target and
renamed onto it when complete, so a failed or interrupted run leaves no half-written output and
whatever was there before as it was."""
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from prunekit.errors import PruneError


@contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    made = _make_parents(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except BaseException:
        _remove_empty(made)
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file should look ordinary
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        _remove_empty(made)
        raise


@contextmanager
def atomic_dir(path):
    """Yield a new empty folder beside `path`. On success what it holds goes to `path`: the
    folder itself when `path` is new (one rename), else entry by entry, each replacing the
    same-named one (the user's other files in `path` are left alone). On error it is removed
    and `path` is left as it was."""
    if Path(path).exists() and not Path(path).is_dir():
        raise PruneError(f"{path} is a file: give a folder for the outputs")
    path = Path(os.path.abspath(path))  # "." or "a/..": the temporary folder goes beside it, not inside
    made = _make_parents(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except BaseException:
        _remove_empty(made)
        raise
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        _publish(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise


def _publish(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.rename(tmp, path)
        return
    for entry in sorted(tmp.iterdir()):
        _replace(entry, path / entry.name)
    tmp.rmdir()


def _replace(src: Path, dest: Path) -> None:
    """os.replace, also for a folder onto a folder (moved aside first, removed after)."""
    if not (dest.is_dir() and not dest.is_symlink()):
        if src.is_dir() and dest.exists():
            dest.unlink()  # a file where the run writes a folder: os.replace cannot swap them
        os.replace(src, dest)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
    os.rename(dest, aside / dest.name)
    os.rename(src, dest)
    shutil.rmtree(aside, ignore_errors=True)


def _make_parents(path: Path) -> list:
    """Create the missing folders above `path`; returns them, deepest first, for _remove_empty."""
    missing, parent = [], path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders) -> None:
    """Remove the folders a failed write made (a failed run leaves no empty trail of them)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty: something else wrote there meanwhile
            return


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
