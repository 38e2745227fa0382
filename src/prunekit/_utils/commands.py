"""Running an outside command for a fetch (pip download, apt-get download, dpkg-deb)."""
import subprocess


def run(cmd, cwd=None):
    """Run `cmd`; None on success, else a one-line reason (its last line of output)."""
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if res.returncode == 0:
        return None
    lines = [ln.strip() for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"{cmd[0]} exited with {res.returncode}"
