"""Open report.html in headless Chromium (Debian `chromium`): the page must render its tables and decode
every embedded figure; a screenshot is kept in tests/artifacts/ (git-ignored) for people to look at."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_analysis_fixtures import SYSTEMS, build_run

from spokentod.analysis.report import write_report

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # tests/artifacts (git-ignored)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path):
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs it (.ci/ensure-chromium)"
    files = write_report([build_run(tmp_path)])
    url = files["report.html"].resolve().as_uri()
    n_figures = sum(1 for k in files if k.startswith("figures/"))

    dom = chromium(tmp_path / "profile", "--dump-dom", url).stdout
    # The page's load handler marks each <img> with whether it decoded (naturalWidth > 0).
    assert f'data-images="{n_figures}/{n_figures}"' in dom, re.findall(r'data-images="[^"]*"', dom)
    assert dom.count('data-rendered="yes"') == n_figures and 'data-rendered="no"' not in dom
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom)) == n_figures
    assert len(re.findall(r"<table>", dom)) >= 12
    table1 = dom[dom.index("Table 1 of the reference paper"):].split("</table>")[0]
    assert table1.count("<tr>") == 1 + len(SYSTEMS)  # header + one row per system
    assert 'id="weak-judge"' in dom and 'class="drop"' in dom

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report_screenshot.png"
    shot.unlink(missing_ok=True)
    chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,4000", url)
    shutil.copy(files["report.html"], ARTIFACTS / "report.html")
    print(f"\nscreenshot: {shot}\nreport:     {ARTIFACTS / 'report.html'}")

    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape == (4000, 1280, 3)
    ink = (np.abs(img - img[5, 5]).sum(axis=2) > 60).mean()  # pixels unlike the page background
    assert ink > 0.03, f"screenshot looks blank ({ink:.1%} non-background pixels)"
    top = img[:800]
    red = ((top[..., 0] > 180) & (top[..., 1] < 80) & (top[..., 2] < 80)).sum()  # the weak-judge banner border
    assert red > 500, "the weak-judge banner is not visible at the top of the page"
