"""prunekit report: one self-contained HTML page of a run, rendered in a real browser (headless
Chromium, which `make test` installs) at a desktop and a phone width: its numbers are there,
every plot decodes, nothing but the metrics table is wider than a phone."""
import json
import re
import shutil
import subprocess

import pytest

from prunekit.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# appended to a copy of the page: what the browser rendered, written into the DOM it dumps
PROBE = ("<script>window.addEventListener('load',()=>{const d=document.documentElement;"
         "d.setAttribute('data-images',[...document.images].map(i=>i.complete?i.naturalWidth:0).join(','));"
         "d.setAttribute('data-width',d.scrollWidth+'/'+window.innerWidth);});</script>")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    home = tmp_path_factory.mktemp("report")
    out = home / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNEKIT_HOME", str(home / "home"))
        assert main(["compare", "--dataset", "digits", "--model", "lenet300", "--epochs", "2",
                     "--finetune-epochs", "1", "--methods", "magnitude-global,structured", "--sparsities", "0.5,0.9",
                     "--out", str(out), "--quiet"]) == 0
        assert main(["report", str(out), "--quiet"]) == 0
    return out


def test_the_page_holds_every_section_and_needs_no_network(run_dir):
    page = (run_dir / "report.html").read_text()
    result = json.loads((run_dir / "compare.json").read_text())
    for title in ("The five metrics", "Accuracy and speed against compression", "Per-layer sparsity",
                  "Per-layer sensitivity of the dense model", "Recipe", "Environment"):
        assert f"<h2>{title}</h2>" in page
    assert f"{result['baseline']['accuracy']:.2%}" in page
    for run in result["runs"]:
        assert f"{run['compression_ratio']:.1f}x" in page and f"{run['speedup']:.2f}x" in page
    assert page.count("data:image/png;base64,") == 4  # accuracy, speedup, layers, sensitivity
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # nothing fetched from elsewhere
    assert json.loads((run_dir / "sensitivity.json").read_text())["layers"]  # kept for the next report
    assert result["environment"]["torch"] in page


def _rendered(path, width, tmp_path):
    probe = tmp_path / f"probe-{width}.html"
    probe.write_text(path.read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           f"--window-size={width},900", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: `make test` installs Debian's chromium")
@pytest.mark.parametrize("width", [1200, 390])
def test_chromium_renders_the_numbers_and_images_at_desktop_and_phone_width(run_dir, tmp_path, width):
    dom = _rendered(run_dir / "report.html", width, tmp_path)
    images = [int(w) for w in re.search(r'data-images="([\d,]*)"', dom)[1].split(",")]
    assert len(images) == 4 and min(images) > 100  # every inlined PNG decoded
    scroll, inner = map(int, re.search(r'data-width="(\d+)/(\d+)"', dom).groups())
    assert scroll <= inner  # the page itself never scrolls sideways; the table scrolls in its box
    result = json.loads((run_dir / "compare.json").read_text())
    assert "magnitude-global" in dom and f"{result['runs'][0]['compression_ratio']:.1f}x" in dom


def test_a_folder_without_a_result_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no result.json or compare.json" in err and len(err.splitlines()) == 1
