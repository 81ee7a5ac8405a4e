"""`write_report` / `bench report` on synthetic runs: files, self-contained HTML, banner, CSVs, CLI."""

from __future__ import annotations

import base64
import csv
import re

import numpy as np
import pytest
from test_analysis_fixtures import build_run, records
from typer.testing import CliRunner

from spokentod.analysis.load import load_bench
from spokentod.analysis.report import weak_banner, write_report
from spokentod.bench.cli import app

CSVS = ("coverage", "system_table", "failures", "primary_failures", "per_turn", "per_phase", "latency", "missing",
        "errors", "judge_agreement", "correlations", "differences")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    run = build_run(tmp_path_factory.mktemp("runs"))
    return run, write_report([run])


def test_files(written):
    run, files = written
    assert files["report.html"] == run / "report" / "report.html"
    for name in ("report.md", "report.html", *(f"{c}.csv" for c in CSVS)):
        assert files[name].is_file() and files[name].stat().st_size > 0, name
    pngs = [p for k, p in files.items() if k.startswith("figures/")]
    assert len(pngs) >= 5 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_html_is_self_contained(written):
    _, files = written
    page = files["report.html"].read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert base64.b64decode(srcs[0].split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r"<link|https?://", page)  # no stylesheet, font or script fetched from anywhere
    for title in ("Systems (Table 1)", "Failure taxonomy (Table 2)", "Per-turn curves", "Per phase",
                  "Correlations", "System differences", "Latency", "Missing judgements and errors"):
        assert title in page
    assert 'id="weak-judge"' in page and "too weak to trust" in page
    assert "position:sticky" in page


def test_markdown(written):
    _, files = written
    md = files["report.md"].read_text()
    assert "Judge too weak to trust" in md
    assert "## Systems (Table 1)" in md and "![Correlation heatmap](figures/correlations.png)" in md
    nat = md[md.index("**naturalness**"):]
    e2e = next(line for line in nat.splitlines() if line.startswith("| e2e"))
    cells = [c.strip() for c in e2e.strip("|").split("|")]
    assert cells[3].startswith("**▼") and not any("▼" in c for i, c in enumerate(cells) if i != 3)  # R3 only
    assert "| cascade | 38 | 0 | 38 | 0 | 36 | 2 |" in md  # coverage: two judgements missing


def test_csv_values_and_missing_as_empty(written):
    run, files = written
    with files["system_table.csv"].open() as f:
        rows = {(r["system"], r["metric"]): r for r in csv.DictReader(f)}
    x = [r["metrics"]["naturalness"] for r in records(run, "cascade") if r["metrics"]["naturalness"] is not None]
    assert float(rows[("cascade", "naturalness")]["mean"]) == pytest.approx(np.mean(x), rel=1e-5)
    assert rows[("cascade", "naturalness")]["n"] == str(len(x))
    assert rows[("text", "dnsmos_ovrl")]["mean"] == "" and rows[("text", "dnsmos_ovrl")]["n"] == "0"
    with files["per_turn.csv"].open() as f:
        drops = [(r["system"], r["turn"]) for r in csv.DictReader(f) if r["metric"] == "naturalness"
                 and r["drop"] == "True"]
    assert drops == [("e2e", "3")]
    with files["errors.csv"].open() as f:
        assert sum(int(r["count"]) for r in csv.DictReader(f)) == 2


def test_no_banner_for_a_trusted_judge(tmp_path):
    bench = load_bench([build_run(tmp_path, judge="strong", systems=("text",))])
    assert weak_banner(bench) is None


@pytest.mark.slow
def test_several_runs_default_out_and_cli(tmp_path, monkeypatch):
    a = build_run(tmp_path, "base", systems=("text",))
    b = build_run(tmp_path, "tuned", systems=("text",), judge="strong", seed=1)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["report", str(a), str(b)])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "report" / "report.html").read_text()
    assert "base/text" in page and "tuned/text" in page
    assert "run base" in page and "run tuned" not in page.split('id="weak-judge"')[1].split("</div>")[0]
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "not a directory" in res.output
