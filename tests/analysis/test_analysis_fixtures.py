"""Synthetic scored run directories for the analysis/report tests (imported by test_analysis_*.py and
test_report_browser.py), and a check that they read back like real bench output.

A run has three systems over 8 dialogues (5 user turns each; two dialogues stop after 4), laid out as
`bench run` + `bench score` write them. Values are built so that the expected results are known:
- naturalness per turn follows NATURALNESS[system] ± 2 (the ± cancels across dialogues), so the only
  judge drop > 10 points is e2e R2 → R3 (-18);
- cascade WER per turn follows CASCADE_WER ± 0.002: the only relative rise > 10 % is R3 → R4 (+100 %);
- the text system has no audio: its audio metrics are null with a reason;
- cascade d3 R2 has an unparseable judgement (null naturalness/consistency/failures), cascade d4 R1 a score
  out of range; e2e d5 R5 failed (error in results, all metrics null), e2e d6 R4 failed and was not scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spokentod.rundir.records import MetricRecord, ResultRecord, RunMeta
from spokentod.rundir.store import read_records

SYSTEMS = ("cascade", "e2e", "text")
N_DIALOGUES = 8
PHASES = ("chitchat", "chitchat", "transition", "task", "task")  # R1..R5
NATURALNESS = {"cascade": [80, 79, 77, 76, 74], "e2e": [82, 80, 62, 61, 60], "text": [90, 88, 87, 86, 85]}
CASCADE_WER = [0.10, 0.10, 0.10, 0.20, 0.20]
FAILS = ("generic", "topic_drift", "repetition", "misunderstanding", "memory")
AUDIO = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "wer", "cer", "duration_s", "speaking_rate_wps",
         "voice_sim")
JUDGES = {
    "weak": {"identity": {"name": "smollm2", "model": "SmolLM2-135M-Instruct"}, "weak": True,
             "weak_reason": "135M-parameter embedded model"},
    "strong": {"identity": {"name": "openai", "model": "gpt-4o"}, "weak": False},
    "smollm2-unflagged": {"identity": {"name": "smollm2", "model": "SmolLM2-135M-Instruct"}},
    "none": None,
}
# `bench score` writes its judge's description into metrics/summary.json (run.json may have none)
SUMMARY_JUDGE = {"backend": {"name": "smollm2", "model": "SmolLM2-135M-Instruct"}, "max_tokens": 400, "weak": True,
                 "weak_reason": "SmolLM2-135M is too small to judge dialogue quality"}


def n_turns(d: int) -> int:
    return 5 if d < 6 else 4


def _judge(rng: np.random.Generator, k: int) -> tuple[dict, dict]:
    """Failure taxonomy: metrics and the judge record. Memory failures only late in the dialogue."""
    metrics, failures = {}, {}
    for f in FAILS:
        present = bool(rng.random() < (0.2 if f != "memory" else 0.1 * k))
        severity = float(rng.integers(10, 90)) if present else 0.0
        metrics[f"fail_{f}_severity"], metrics[f"fail_{f}_present"] = severity, present
        failures[f] = {"present": present, "severity": severity, "reason": "synthetic"}
    worst = max(FAILS, key=lambda f: failures[f]["severity"])
    return metrics, {"failures": failures, "primary_failure": worst if failures[worst]["present"] else "none"}


def record(system: str, d: int, k: int, rng: np.random.Generator) -> dict:
    off = 1 if d % 2 else -1
    m: dict[str, float | bool | None] = {}
    missing: dict[str, str] = {}
    if system == "text":
        for a in AUDIO:
            m[a], missing[a] = None, "no audio (text-only system)"
    else:
        m["dnsmos_ovrl"] = 3.0 + (0.3 if system == "cascade" else 0.0) + 0.2 * rng.standard_normal()
        m["dnsmos_sig"] = m["dnsmos_ovrl"] + 0.3 + 0.05 * rng.standard_normal()
        m["dnsmos_bak"] = 3.8 + 0.1 * rng.standard_normal()
        m["dnsmos_p808"] = 3.5 + 0.1 * rng.standard_normal()
        m["wer"] = CASCADE_WER[k - 1] + 0.002 * off if system == "cascade" else 0.05 + 0.005 * off
        m["cer"] = m["wer"] / 2
        m["duration_s"] = 4 + rng.random()
        m["speaking_rate_wps"] = 2.5 + 0.2 * rng.random()
        m["voice_sim"] = None if k == 1 else 0.9 + 0.02 * rng.random()
        if k == 1:
            missing["voice_sim"] = "first agent turn: no earlier voice to compare"
    nat = NATURALNESS[system][k - 1] + 2 * off
    m["naturalness"] = nat
    m["consistency"] = 70 + 10 * rng.random()
    fails, judge = _judge(rng, k)
    m.update(fails)
    m["sim_gold"] = 0.3 + 0.004 * nat + 0.05 * rng.random()  # agrees with the judge by construction
    m["topic_sim"], m["genericness"] = 0.5 + 0.1 * rng.random(), 0.2 + 0.1 * rng.random()
    m["repetition_ngram"], m["repetition_emb"] = 0.1 * rng.random(), 0.3 + 0.1 * rng.random()
    m["reply_words"] = float(rng.integers(8, 30))
    lat = {"cascade": ("lat_asr", "lat_ttft", "lat_llm", "lat_tts", "lat_first_audio", "lat_total"),
           "e2e": ("lat_first_audio", "lat_total"), "text": ("lat_ttft", "lat_llm", "lat_total")}[system]
    for i, name in enumerate(lat):
        m[name] = 0.1 * (i + 1) + 0.05 * rng.random()
    if system == "cascade":
        m["rtf_tts"] = 0.3 + 0.05 * rng.random()
    if system == "cascade" and (d, k) == (3, 2):
        judge = {"error": "unparseable JSON: Expecting value: line 1 column 1 (char 0)"}
        for name in ["naturalness", "consistency", *(f"fail_{f}_{x}" for f in FAILS for x in ("severity", "present"))]:
            m[name], missing[name] = None, "judge: unparseable JSON: Expecting value: line 1 column 1 (char 0)"
        missing["primary_failure"] = "judge reply has no 'primary_failure'"  # not a metric: counted, not a row
    if system == "cascade" and (d, k) == (4, 1):
        m["naturalness"], missing["naturalness"] = None, "judge: score out of range: 140"
    if system == "e2e" and (d, k) == (5, 5):
        judge = {}
        for name in list(m):
            m[name], missing[name] = None, "reply error: audiolm: timeout"
        missing["transcript"] = "reply failed"
    return MetricRecord(system=system, dialogue_id=f"d{d}", turn=2 * (k - 1), seed=0, phase=PHASES[k - 1],
                        turn_ordinal=k, metrics=m, missing=missing, judge=judge,
                        transcript="synthetic transcript", text="synthetic reply",
                        error="audiolm: timeout after 60 s" if missing.get("transcript") else None).to_json()


def result(system: str, d: int, k: int) -> dict:
    err = None
    if system == "e2e" and (d, k) in ((5, 5), (6, 4)):
        err = "audiolm: timeout after 60 s" if k == 5 else "audiolm: CUDA out of memory"
    return ResultRecord(system=system, dialogue_id=f"d{d}", turn=2 * (k - 1), seed=0, attempt=1,
                        phase=PHASES[k - 1], text=None if err else "synthetic reply", error=err,
                        error_reason=("audiolm: timeout" if k == 5 else "audiolm: OutOfMemoryError") if err
                        else None).to_json()


def build_run(root: Path, name: str = "run", judge: str = "weak", systems: tuple[str, ...] = SYSTEMS,
              seed: int = 0, status: str = "finished") -> Path:
    """Write a scored run directory under root/name and return it. `judge`: a JUDGES key for run.json, or
    "summary" for a judge described only in metrics/summary.json (as `bench score` writes it)."""
    rng = np.random.default_rng(seed)
    run = root / name
    (run / "metrics").mkdir(parents=True)
    (run / "results").mkdir()
    meta = RunMeta(status=status, protocol_hash="abc", systems={s: {"type": s} for s in systems},
                   config={"dataset": {"corpus": "demo"}})
    if JUDGES.get(judge) is not None:
        meta.judge = JUDGES[judge]  # an extra key: the report also reads a judge recorded in run.json
    (run / "run.json").write_text(json.dumps(meta.to_json(exclude_unset=True)))
    summary = {"run": str(run), "systems": {s: {} for s in systems},
               "judge": SUMMARY_JUDGE if judge == "summary" else None}
    (run / "metrics" / "summary.json").write_text(json.dumps(summary))
    for s in systems:
        recs, res = [], []
        for d in range(N_DIALOGUES):
            for k in range(1, n_turns(d) + 1):
                res.append(result(s, d, k))
                if not (s == "e2e" and (d, k) == (6, 4)):
                    recs.append(record(s, d, k, rng))
        (run / "metrics" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (run / "results" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in res))
    return run


def records(run: Path, system: str) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics" / f"{system}.jsonl").read_text().splitlines()]


def test_fixture_reads_like_bench_output(tmp_path):
    run = build_run(tmp_path)
    recs, dropped = read_records(run / "metrics" / "cascade.jsonl")
    assert dropped == 0 and len(recs) == 6 * 5 + 2 * 4
    assert {r["turn_ordinal"] for r in recs} == {1, 2, 3, 4, 5}
    res, _ = read_records(run / "results" / "e2e.jsonl")
    assert sum(1 for r in res if r["error"]) == 2
