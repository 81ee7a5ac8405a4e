"""MOS predictor agreement (analysis/mos_section.py) on the synthetic run of test_analysis_fixtures, with a
DistillMOS column added whose agreement with DNSMOS OVRL is known: a monotone function of it for cascade
(rho = 1), the reverse order for e2e (rho = -1)."""

from __future__ import annotations

import json
import math

import pytest
from test_analysis_fixtures import build_run

from spokentod.analysis import mos_section, stats
from spokentod.analysis.load import load_bench
from spokentod.analysis.report import write_report


def add_distillmos(run):
    for system, sign in (("cascade", 1), ("e2e", -1)):
        path = run / "metrics" / f"{system}.jsonl"
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        for r in recs:
            x = r["metrics"].get("dnsmos_ovrl")
            r["metrics"]["distillmos"] = None if x is None else 1 + 4 / (1 + math.exp(-sign * 3 * (x - 3)))
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return run


def test_agreement_per_system_and_pooled(tmp_path):
    bench = load_bench([add_distillmos(build_run(tmp_path))])
    assert mos_section.predictors(bench) == ["dnsmos_ovrl", "dnsmos_p808", "distillmos"]
    rows = {(r["metric_x"], r["metric_y"], r["scope"]): r for r in mos_section.agreement(bench, ["dnsmos_ovrl",
                                                                                                 "distillmos"])}
    assert rows[("dnsmos_ovrl", "distillmos", "cascade")]["rho"] == pytest.approx(1.0)
    assert rows[("dnsmos_ovrl", "distillmos", "e2e")]["rho"] == pytest.approx(-1.0)
    pooled = rows[("dnsmos_ovrl", "distillmos", "all")]
    assert pooled["n"] == 38 + 36 and -1 < pooled["rho"] < 1  # e2e: one reply failed, one unscored; text: no audio
    assert ("dnsmos_ovrl", "distillmos", "text") not in rows


def test_report_section_warns_when_they_disagree(tmp_path):
    files = write_report([add_distillmos(build_run(tmp_path))], tmp_path / "report")
    md = files["report.md"].read_text()
    section = md[md.index("## Do the MOS predictors agree?"):].split("\n## ")[0]
    assert "DNSMOS OVRL × DistillMOS" in section and "agree weakly" in section
    assert "figures/mos_agreement.png" in files and "mos_agreement.csv" in files
    assert md.index("## Do the MOS predictors agree?") > md.index("## Correlations between audio")


def test_spearman_ci():
    c = stats.spearman_ci([1, 2, 3, 4, 5, None], [10, 20, 30, 40, 50, 60])
    assert c.r == pytest.approx(1.0) and c.n == 5
    c = stats.spearman_ci([1, 2, 3, 4, 5, 6, 7, 8], [2, 1, 4, 3, 6, 5, 8, 7])
    assert 0 < c.lo < c.r < c.hi < 1 and c.r == pytest.approx(0.905, abs=1e-3)
    assert math.isnan(stats.spearman_ci([1, 1, 1, 1], [1, 2, 3, 4]).r)
