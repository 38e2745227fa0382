"""Regenerate every figure table in README.md and docs/**/*.md from the benchmark JSON files.

A generated table sits between two marker comments, and nothing else may edit it:

    <!-- table:NAME -->
    ...
    <!-- /table:NAME -->

NAME is a key of TABLES (benchmarks/_tables/); each builds its markdown from JSON files under
docs/results/runs/ only, so a figure in a table cannot drift from its raw output. A new run:
put its JSON (and log) in docs/results/runs/<benchmark>/, note it in that folder's README.md,
point the builder at it, and run this script.

    python benchmarks/tables.py            # rewrite stale tables in place
    python benchmarks/tables.py --check    # exit 1 listing stale tables (tests/test_docs.py runs this)
    python benchmarks/tables.py --list     # every table and the JSON files it reads
"""
import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import ROOT, TABLES  # noqa: E402

MARKER = re.compile(r"<!-- table:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /table:(?P=name) -->", re.S)
OPENING = re.compile(r"<!-- table:([\w-]+) -->")


def pages() -> list:
    """The files that may hold generated tables: the README and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def render(name: str) -> str:
    if name not in TABLES:
        raise SystemExit(f"unknown table {name!r}; known: {', '.join(sorted(TABLES))}")
    builder, _sources = TABLES[name]
    return builder().strip("\n") + "\n"


def refresh(text: str) -> tuple:
    """(new text, names of the tables whose body changed)."""
    stale = []

    def replace(match):
        body = render(match["name"])
        if body != match["body"]:
            stale.append(match["name"])
        return f"<!-- table:{match['name']} -->\n{body}<!-- /table:{match['name']} -->"

    return MARKER.sub(replace, text), stale


def stale_tables() -> list:
    """One line per generated table that differs from what its JSON gives, or that no page shows."""
    found, used = [], set()
    for page in pages():
        text = page.read_text()
        paired, opened = [m["name"] for m in MARKER.finditer(text)], OPENING.findall(text)
        used |= set(paired)
        found += [f"{page.relative_to(ROOT)}: table {name} has no closing marker"
                  for name in sorted(set(opened)) if paired.count(name) < opened.count(name)]
        _, stale = refresh(text)
        found += [f"{page.relative_to(ROOT)}: table {name} is out of date" for name in stale]
    return found + [f"table {name} is on no page" for name in sorted(set(TABLES) - used)]


def write(page: Path, text: str):
    """Through a temporary file and a rename, so a crash never leaves half a page."""
    tmp = page.with_name(f".{page.name}.tmp")
    tmp.write_text(text)
    tmp.replace(page)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    parser.add_argument("--list", action="store_true", help="list the tables and their JSON sources")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, sources) in sorted(TABLES.items()):
            print(f"{name}: {', '.join(sources)}")
        return 0
    if args.check:
        stale = stale_tables()
        for entry in stale:
            print(entry)
        if stale:
            print("run: python benchmarks/tables.py")
        return 1 if stale else 0
    for page in pages():
        text = page.read_text()
        new, stale = refresh(text)
        if stale:
            write(page, new)
            print(f"{page.relative_to(ROOT)}: rewrote {', '.join(stale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
