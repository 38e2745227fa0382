"""Building and loading prunekit's C kernels (deploy/build.py): a private cache, a digest checked
before anything is loaded, $CC with arguments, old builds removed, processes building at once;
and without a compiler, models saved with our kernels load dense, with one warning."""
import hashlib
import multiprocessing
import os
import shutil
import stat
import time
import warnings

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit import zoo
from prunekit.deploy import SparseLinear, apply_kernels, build
from prunekit.errors import PruneError

GCC = shutil.which("gcc") or shutil.which("cc")
needs_cc = pytest.mark.skipif(GCC is None, reason="no C compiler")


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    """An empty $PRUNEKIT_HOME and nothing loaded yet; after, the other tests load as before."""
    monkeypatch.setenv("PRUNEKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CC", raising=False)
    build.loaded.cache_clear()
    yield tmp_path / "home" / "kernels"
    build.loaded.cache_clear()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A kernels directory holding one build, compiled once for the tests that copy it."""
    root = tmp_path_factory.mktemp("built")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRUNEKIT_HOME", str(root))
        patch.delenv("CC", raising=False)
        build.build()
    return root / "kernels"


def copy_build(built, kernels):
    """The module's build in this test's cache: (library path, its bytes)."""
    shutil.copytree(built, kernels)
    path = build.library_path()
    return path, path.read_bytes()


def loaded_bytes(monkeypatch):
    """The bytes each dlopen is given, appended to the returned list as they are loaded."""
    seen, real = [], build._load_bytes
    monkeypatch.setattr(build, "_load_bytes", lambda directory, data: seen.append(data) or real(directory, data))
    return seen


def recorded(path):
    return build._record(path).read_text()


def pruned_lenet():
    torch.manual_seed(0)
    model = zoo.build("lenet300").eval()
    pk.prune_magnitude(model, 0.9)
    return model


@pytest.mark.parametrize("no_compiler", ["CC names no program", "PATH holds none"])
def test_without_a_compiler_a_model_saved_with_our_kernels_loads_dense_with_one_warning(
        tmp_path, monkeypatch, no_compiler):
    model, x = pruned_lenet(), torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected, hidden = model(x), model.net[:5](x)  # hidden: what the two dense layers give
    with monkeypatch.context() as patch:  # saved as on a machine with a compiler, without compiling here
        patch.setattr(build, "available", lambda: True)
        apply_kernels(model, {"net.1": "csr16", "net.3": "delta8", "net.5": "torch-csr"})
        path = pk.save(model, tmp_path / "m.safetensors")
    if no_compiler == "CC names no program":
        monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    else:
        monkeypatch.setenv("PATH", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = pk.load(path)
    messages = [str(w.message) for w in caught if "kernels are unavailable" in str(w.message)]
    assert len(messages) == 1 and "2 layer(s) run dense" in messages[0]  # torch-csr needs no C
    assert ("no-such-cc" if no_compiler == "CC names no program" else "no C compiler") in messages[0]
    assert not build.available()
    assert type(loaded.net[1]) is nn.Linear and type(loaded.net[3]) is nn.Linear
    assert isinstance(loaded.net[5], SparseLinear) and loaded.net[5].kernel == "torch-csr"
    with torch.no_grad():
        assert torch.equal(loaded.net[:5](x), hidden)  # the very same computation
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-6)


def test_a_file_naming_none_of_our_kernels_loads_without_building_them(tmp_path, monkeypatch):
    model = pruned_lenet()
    apply_kernels(model, {"net.1": "torch-csr"})  # torch's kernel: no C
    path = pk.save(model, tmp_path / "m.safetensors")
    monkeypatch.setattr(build, "_compiler", lambda: pytest.fail("loading started the compiler"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = pk.load(path)
    assert isinstance(loaded.net[1], SparseLinear) and loaded.net[1].kernel == "torch-csr"
    assert build.loaded.cache_info().currsize == 0  # nothing asked for our kernels


def test_the_cache_directory_is_private(fresh):
    assert stat.S_IMODE(build.kernel_dir().stat().st_mode) == 0o700
    fresh.chmod(0o755)  # as an older prunekit left it: ours, others may only read
    assert stat.S_IMODE(build.kernel_dir().stat().st_mode) == 0o700


@pytest.mark.parametrize("spoil", ["writable by others", "a symlink", "another user's"])
def test_a_directory_that_is_not_private_is_refused(fresh, tmp_path, spoil):
    if spoil == "a symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        fresh.parent.mkdir()
        fresh.symlink_to(tmp_path / "elsewhere")
    else:
        fresh.mkdir(parents=True, mode=0o700)
        if spoil == "writable by others":
            fresh.chmod(0o777)
        elif os.getuid() == 0:
            os.chown(fresh, 4321, 4321)
        else:
            pytest.skip("only root can give a directory to another user")
    with pytest.raises(PruneError, match="not a private directory"):
        build.kernel_dir()
    assert not build.available() and "not a private directory" in build.unavailable_reason()
    assert not list((tmp_path / "elsewhere" if spoil == "a symlink" else fresh).glob("pk_kernels_*"))


@needs_cc
def test_a_build_whose_bytes_changed_is_rebuilt_not_loaded(built, fresh, monkeypatch):
    path, genuine = copy_build(built, fresh)
    tampered = bytearray(genuine)
    tampered[len(tampered) // 2] ^= 0xFF
    path.write_bytes(tampered)
    seen = loaded_bytes(monkeypatch)
    assert build.available()
    assert seen == [path.read_bytes()] and seen[0] != bytes(tampered)
    assert hashlib.sha256(seen[0]).hexdigest() == recorded(path)


@needs_cc
def test_a_library_prunekit_did_not_build_is_not_loaded(built, fresh, monkeypatch):
    path, genuine = copy_build(built, fresh)
    build._record(path).unlink()
    path.write_bytes(genuine + b"planted")  # a library with no digest record
    seen = loaded_bytes(monkeypatch)
    assert build.available()
    assert len(seen) == 1 and not seen[0].endswith(b"planted")
    assert hashlib.sha256(seen[0]).hexdigest() == recorded(path)


@needs_cc
def test_the_bytes_loaded_are_the_bytes_checked(built, fresh, monkeypatch):
    path, genuine = copy_build(built, fresh)
    real = build.ctypes.CDLL

    def swapped_after_the_check(name, *args, **kwargs):
        path.write_bytes(b"swapped in between the check and dlopen")
        assert name != str(path) and open(name, "rb").read() == genuine
        return real(name, *args, **kwargs)
    monkeypatch.setattr(build.ctypes, "CDLL", swapped_after_the_check)
    assert build.available() and build.library().pk_nm


@needs_cc
def test_cc_with_arguments_builds_and_removes_builds_over_a_day_old(built, fresh, monkeypatch):
    plain, _ = copy_build(built, fresh)
    old = time.time() - 2 * 24 * 3600
    for file in (plain, build._record(plain)):
        os.utime(file, (old, old))
    recent = fresh / "pk_kernels_0123456789abcdef.so"  # another version's, built a minute ago
    recent.write_bytes(b"x")
    monkeypatch.setenv("CC", f"{GCC} -O0")
    path = build.build()
    assert path != plain  # the key names the compiler's arguments too
    assert build.available()
    assert sorted(p.name for p in fresh.glob("pk_kernels_*")) == sorted(
        [path.name, build._record(path).name, recent.name])


def test_cc_arguments_reach_the_compiler_as_arguments(monkeypatch):
    if GCC is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("CC", f"{GCC} --no-such-option")  # one program name before: 'gcc --no-such-option'
    assert not build.available()
    assert "failed" in build.unavailable_reason() and "--no-such-option" in build.unavailable_reason()


def build_at_once(barrier, results):
    """In a forked process: wait for the other, then build and load."""
    barrier.wait()
    build.library()
    results.put(str(build.build()))


@needs_cc
def test_processes_building_at_once_all_load_one_verified_build(fresh):
    # forked, not started afresh: the test process has paid for importing torch once already
    fork = multiprocessing.get_context("fork")
    barrier, results = fork.Barrier(2), fork.Queue()
    runs = [fork.Process(target=build_at_once, args=(barrier, results)) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=120)
    assert [run.exitcode for run in runs] == [0, 0]
    path = build.library_path()
    assert [results.get(timeout=1), results.get(timeout=1)] == [str(path)] * 2
    assert sorted(p.name for p in fresh.glob("pk_kernels_*")) == sorted([path.name, build._record(path).name])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded(path)
