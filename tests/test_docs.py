"""The docs hold together: generated tables match their JSON, links resolve, the index reaches every page."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def _tables():
    spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _links(page: Path):
    """(target path, anchor or None) of every relative link on the page, code left out."""
    for target in LINK.findall(CODE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue   # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        yield (page.parent / path).resolve() if path else page, anchor or None


def _anchors(page: Path) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", FENCE.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_generated_tables_match_their_json():
    stale = _tables().stale_tables()
    assert not stale, "\n".join(stale)


def test_a_table_edited_by_hand_is_caught():
    tables = _tables()
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- table:demo -->\n.*?<!-- /table:demo -->", readme, re.S).group(0)
    cell = re.search(r"\| (\d+\.\d\d) % \|", block)
    edited = block.replace(cell.group(0), f"| {float(cell.group(1)) + 0.01:.2f} % |", 1)
    assert edited != block
    assert tables.refresh(readme.replace(block, edited))[1] == ["demo"]
    assert tables.refresh(readme)[1] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for path, anchor in _links(page):
        if not path.exists():
            broken.append(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{path.relative_to(ROOT)}#{anchor}")
    assert not broken, f"{page.relative_to(ROOT)} links to missing: {broken}"


def test_index_reaches_every_page():
    seen, todo = set(), [DOCS / "index.md"]
    while todo:
        page = todo.pop()
        if page in seen or not page.exists():
            continue
        seen.add(page)
        todo += [path for path, _ in _links(page) if path.suffix == ".md" and DOCS in path.parents]
    unreached = sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md") if p.resolve() not in seen)
    assert not unreached, f"docs/index.md does not lead to: {unreached}"


IMPORT = re.compile(r"^\s*(from prunekit[\w.]* import [\w, ]+|import prunekit[\w.]*(?: as \w+)?)\s*(?:#.*)?$", re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_import_in_the_docs_code_resolves(page):
    """A guide's code must follow the package when it moves: every prunekit import in a
    fenced block runs."""
    for block in FENCE.findall(page.read_text()):
        for statement in IMPORT.findall(block):
            exec(statement.strip(), {})  # noqa: S102 - our own docs, imports only


def test_generated_references_match_the_code():
    """docs/reference/cli.md and recipes.md are generated from the parsers and the schema."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / "docs" / "reference" / "generate.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
