"""How structured_coverage.py runs each (model, tool) in a child process, with a time and
memory limit."""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _parse_size(text):
    units = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}  # for --max-params and --max-rss
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def _rss(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _mem_total():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            return int(line.split()[1]) * 1024
    return None


def run_tool(script, name, task, tool, ratios, timeout, threads, max_rss):
    """Records of one (model, tool) child of `script`; ratios it did not finish get 'timeout' or
    an error. The child is killed past timeout x ratios seconds or max_rss bytes resident."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out, tempfile.TemporaryFile("w+") as err:
        cmd = [sys.executable, script, "--child", name, task, tool, ",".join(map(str, ratios)),
               out.name, str(threads or 0)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        limit = timeout * len(ratios)
        deadline = time.monotonic() + limit
        failure = None
        while proc.poll() is None:
            if time.monotonic() > deadline:
                failure = ("timeout", f"timeout after {limit:.0f} s")
            elif max_rss and _rss(proc.pid) > max_rss:
                failure = ("error", f"memory: over {max_rss / 2**30:.1f} GiB resident, killed")
            if failure:
                proc.kill()
                break
            time.sleep(0.2)
        code = proc.wait()
        if failure is None and code:
            err.seek(0)
            tail = (err.read().strip().splitlines() or [""])[-1]
            failure = ("error", f"crash (exit {code}): {tail[:300]}")
        records = [json.loads(line) for line in Path(out.name).read_text().splitlines() if line]
    done = {r["ratio"] for r in records}
    for ratio in ratios:
        if ratio not in done:
            status, error = failure or ("error", "no result")
            records.append({"model": name, "task": task, "tool": tool, "ratio": ratio,
                            "status": status, "error": error, "seconds": None})
    return records
