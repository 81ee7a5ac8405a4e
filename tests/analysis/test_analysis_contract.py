"""The report reads what `bench score` really writes: results records shaped like the runner's, scored by
metrics.score.score_run (latency group only: no model needed), then reported."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from spokentod.analysis import aggregate as agg
from spokentod.analysis.load import load_bench
from spokentod.analysis.report import write_report
from spokentod.metrics.score import score_run
from spokentod.rundir.records import ResultRecord, RunMeta

TIMINGS = {"cascade": ("asr", "ttft", "llm", "tts", "first_audio", "total"), "text": ("ttft", "llm", "total")}


def result(system: str, d: int, turn: int, rng: np.random.Generator, error: str | None = None) -> dict:
    timings = {k: round(float(0.1 * (i + 1) + rng.random()), 4) for i, k in enumerate(TIMINGS[system])}
    return ResultRecord(system=system, dialogue_id=f"dlg{d}", turn=turn, seed=0, attempt=1,
                        phase=["chitchat", "transition", "task"][turn // 2],
                        text=None if error else "Sure, happy to help.", audio_path=None,
                        audio_seconds=2.0 if system == "cascade" and not error else None,
                        timings={} if error else timings, error=error,
                        error_reason="llm: timeout" if error else None, history="gold").to_json()


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    run = tmp_path_factory.mktemp("contract") / "run"
    (run / "results").mkdir(parents=True)
    meta = RunMeta(status="finished", systems={"cascade": {}, "text": {}},
                   config={"systems": {"cascade": {"type": "cascade"}, "text": {"type": "text"}}})
    (run / "run.json").write_text(json.dumps(meta.to_json(exclude_unset=True)))
    rng = np.random.default_rng(0)
    recs = {s: [result(s, d, t, rng, "llm: timeout after 30 s" if (s, d, t) == ("text", 2, 4) else None)
                for d in range(4) for t in (0, 2, 4)] for s in TIMINGS}
    for s, rs in recs.items():
        (run / "results" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    score_run(run, metrics=["latency"], cache=False)
    return run, recs


def test_report_reads_bench_score_output(scored, tmp_path):
    run, recs = scored
    bench = load_bench([run])
    assert bench.systems == ["cascade", "text"]
    assert {r.ordinal for r in bench.replies} == {1, 2, 3}  # R1..R3 from the scorer's turn_ordinal
    lat = {(r["system"], r["stage"]): r for r in agg.latency(bench)}
    total = [r["timings"]["total"] for r in recs["text"] if not r["error"]]
    assert lat[("text", "lat_total")]["n"] == len(total) == 11
    assert lat[("text", "lat_total")]["p90"] == pytest.approx(np.percentile(total, 90))
    assert lat[("cascade", "rtf_tts")]["mean"] == pytest.approx(
        np.mean([r["timings"]["tts"] / 2.0 for r in recs["cascade"]]))
    assert ("text", "lat_asr") not in lat  # a stage the system lacks is missing, not 0
    assert {(r["system"], r["reason"]): r["count"] for r in agg.error_counts(bench)} == {("text", "llm: timeout"): 1}

    files = write_report([run], tmp_path / "report")
    with files["latency.csv"].open() as f:
        assert {(r["system"], r["stage"]) for r in csv.DictReader(f)} >= {("cascade", "lat_asr"), ("text", "lat_ttft")}
    assert "Latency" in files["report.html"].read_text()
