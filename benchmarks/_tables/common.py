"""The registry of generated tables and the helpers their builders share (loading, mean +- std, markdown)."""
import fnmatch
import functools
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "docs" / "results" / "runs"
TABLES = {}   # name -> (builder, declared source patterns)


@functools.lru_cache(maxsize=None)
def _read(rel: str):
    return json.loads((RUNS / rel).read_text())


class Sources:
    """The JSON files a builder declared (patterns relative to docs/results/runs/), by path."""

    def __init__(self, patterns):
        self.patterns = patterns

    def __getitem__(self, rel):
        if not any(fnmatch.fnmatch(rel, p) for p in self.patterns):
            raise KeyError(f"{rel} is not among the declared sources {self.patterns}")
        return _read(rel)

    def many(self, folder, names):
        return [self[f"{folder}/{name}.json"] for name in names]


def table(name, *patterns):
    def register(fn):
        TABLES[name] = (lambda: fn(Sources(patterns)), list(patterns))
        return fn
    return register


def md(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values) -> tuple:
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values, unit=" %", nd=2) -> str:
    m, s = mean_std(values)
    return f"{m:.{nd}f} ± {s:.{nd}f}{unit}"


def signed(x, nd=2) -> str:
    return f"{x:+.{nd}f}".replace("-", "−")


def bold(text, when=True) -> str:
    return f"**{text}**" if when else str(text)


def runs_of(datas, key="runs"):
    return [run for d in datas for run in d[key]]


def secs(x) -> str:
    return f"{x:.2f} s" if x < 10 else f"{x:.1f} s"


MIB = 2 ** 20
