"""The Context Trap study report (studies/context_trap.py) on a synthetic scored run whose slopes are known by
construction: e2e's context_sim falls 0.04 per turn under gold context and cascade's is flat (± noise), so the
verdict must say the end-to-end system loses more; free-running, both fall 0.02 per turn: not shown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from spokentod.analysis import stats
from spokentod.analysis.load import load_bench
from spokentod.cli import app
from spokentod.rundir.records import MetricRecord, ResultRecord, RunMeta, Session
from spokentod.studies import context_trap

SYSTEMS = {f"{t}-{m}": {"type": t, "history": m, "prompt": "sales_agent_v1"}
           for t in ("cascade", "e2e", "text") for m in ("gold", "self")}
FALL = {("e2e", "gold"): -0.04, ("e2e", "self"): -0.02, ("cascade", "self"): -0.02}


def build_run(root: Path, dialogues: int = 24) -> Path:
    rng = np.random.default_rng(0)
    run = root / "trap"
    (run / "metrics").mkdir(parents=True)
    (run / "results").mkdir()
    meta = RunMeta(status="finished", systems={s: {"type": c["type"]} for s, c in SYSTEMS.items()},
                   config={"dataset": {"corpus": "salesbot2-sharegpt", "path": "x/test_tod_in_the_end.json",
                                       "sample": {"n": dialogues, "stratify": "intent"}}, "systems": SYSTEMS},
                   sessions=[Session(started="2026-12-04T00:00:00+00:00", wall_s=3725.0)])
    (run / "run.json").write_text(json.dumps(meta.to_json(exclude_unset=True)))
    (run / "metrics" / "summary.json").write_text(json.dumps({"wall_s": 610.0}))
    difficulty = rng.normal(0, 0.1, dialogues)
    for s, c in SYSTEMS.items():
        fall = FALL.get((c["type"], c["history"]), 0.0)
        recs, res = [], []
        for d in range(dialogues):
            for k in range(1, 7):
                v = 0.6 + difficulty[d] + fall * k + rng.normal(0, 0.02)
                recs.append(MetricRecord(system=s, dialogue_id=f"d{d}", turn=2 * k, phase="task", turn_ordinal=k,
                                         metrics={"context_sim": v, "sim_gold": v - 0.1}).to_json())
                res.append(ResultRecord(system=s, dialogue_id=f"d{d}", turn=2 * k, phase="task",
                                        history=c["history"], text="reply").to_json())
        (run / "metrics" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (run / "results" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in res))
    return run


def test_slopes_pair_e2e_with_cascade_per_mode_and_match_the_statistic(tmp_path):
    bench = load_bench([build_run(tmp_path)])
    assert context_trap.roles(bench)[("e2e", "self")] == "e2e-self"
    rows = {(s.metric, s.mode): s for s in context_trap.slopes(bench, n_boot=400)}
    assert set(rows) == {(m, mode) for m in ("context_sim", "sim_gold") for mode in ("gold", "self")}
    gold = rows[("context_sim", "gold")]
    assert (gold.e2e, gold.cascade) == ("e2e-gold", "cascade-gold")
    assert abs(gold.result.a + 0.04) < 0.005 and abs(gold.result.b) < 0.005
    assert gold.result.hi < 0  # e2e falls faster
    points = context_trap._points(bench, "e2e-gold", "context_sim")
    assert gold.result == stats.cluster_bootstrap_slope_diff(points, context_trap._points(
        bench, "cascade-gold", "context_sim"), n_boot=400)
    assert context_trap.verdict(gold).startswith("**Yes**")
    free = rows[("context_sim", "self")]
    assert free.result.lo < 0 < free.result.hi and context_trap.verdict(free).startswith("**Not shown**")


def test_study_command_writes_the_verdict_the_stage_times_and_the_full_report(tmp_path):
    run = build_run(tmp_path)
    out = tmp_path / "reports" / "context_trap_cpu.md"
    r = CliRunner().invoke(app, ["bench", "study", str(run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    md = out.read_text()
    assert "## Verdict" in md and "- **Yes** (" in md and "**Not shown** (" in md
    assert "| bench run (1 session, user audio rendering included) | 1 h 02 min |" in md
    assert "| scoring (`bench score`) | 10 min 10 s |" in md
    assert "24 dialogues scored" in md and "`e2e-self`: e2e, history self, 144 replies" in md
    assert "### Per-turn curves" in md and "### Systems (Table 1)" in md  # the bench report's sections, one level down
    for link in [ln.split("](", 1)[1].rstrip(")") for ln in md.splitlines() if ln.startswith("![")]:
        assert (out.parent / link).is_file(), link  # figure links resolve from the study's folder
    assert (out.parent / "context_trap_cpu" / "report.html").is_file()
    assert "not in git" in md and "bench run CONFIG" in md  # how to get the audio back
    trust = md.split("for the verdict's metrics:", 1)[1].split("## What ran", 1)[0]
    assert "`sim_gold`: no judge-check on record" in trust  # each verdict metric says how far it is trusted
    assert "similarity to context" in trust or "`context_sim`: no judge-check" in trust
