"""Gold vs free-running pairs (analysis/pairing.py) and their report section, on a synthetic scored run whose
differences are known by construction:

- `cascade-gold` and `cascade-self` differ only in `history` (and `concurrency`): a pair. `cascade-hot` is
  free-running too but with another temperature: no pair. `text` has no counterpart.
- naturalness self − gold = -3 (k - 1) at R_k, ±1 by dialogue (the ± cancels over the 8 dialogues), so the
  gap is 0 at R1 and grows; phases R1-R2 chit-chat, R3 transition, R4-R5 task;
- wer is equal on both sides (difference 0 everywhere); dialogue d2's self reply at R3 has no naturalness.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from spokentod.analysis import pairing
from spokentod.analysis.load import load_bench
from spokentod.analysis.report import write_report
from spokentod.rundir.records import MetricRecord, ResultRecord, RunMeta

PHASES = ("chitchat", "chitchat", "transition", "task", "task")
BASE = {"type": "cascade", "asr": {"name": "whisper-ct2"}, "llm": {"name": "smollm2"}, "tts": {"name": "kokoro"},
        "params": {"temperature": 0.0}}
CONFIGS = {"cascade-gold": {**BASE, "history": "gold"}, "cascade-self": {**BASE, "history": "self", "concurrency": 1},
           "cascade-hot": {**BASE, "history": "self", "params": {"temperature": 0.7}},
           "text": {"type": "text", "llm": {"name": "smollm2"}, "history": "gold"}}


def _naturalness(system: str, d: int, k: int) -> float:
    gold = 80.0 - k
    if system == "cascade-gold":
        return gold
    return gold - 3 * (k - 1) + (1 if d % 2 else -1)


def build_paired_run(root: Path, dialogues: int = 8) -> Path:
    run = root / "paired"
    (run / "metrics").mkdir(parents=True)
    (run / "results").mkdir()
    meta = RunMeta(status="finished", systems={s: {"type": c["type"]} for s, c in CONFIGS.items()},
                   config={"dataset": {"corpus": "demo"}, "systems": CONFIGS})
    (run / "run.json").write_text(json.dumps(meta.to_json(exclude_unset=True)))
    for s in CONFIGS:
        recs, res = [], []
        for d in range(dialogues):
            for k in range(1, 6):
                m, missing = {"naturalness": _naturalness(s, d, k), "wer": 0.1 + 0.01 * d}, {}
                if (s, d, k) == ("cascade-self", 2, 3):
                    m["naturalness"], missing["naturalness"] = None, "judge: unparseable"
                recs.append(MetricRecord(system=s, dialogue_id=f"d{d}", turn=2 * (k - 1), phase=PHASES[k - 1],
                                         turn_ordinal=k, metrics=m, missing=missing).to_json())
                res.append(ResultRecord(system=s, dialogue_id=f"d{d}", turn=2 * (k - 1), phase=PHASES[k - 1],
                                        history=CONFIGS[s]["history"], text="reply").to_json())
        (run / "metrics" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (run / "results" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in res))
    return run


def test_pairs_are_systems_that_differ_only_in_history(tmp_path):
    bench = load_bench([build_paired_run(tmp_path)])
    assert pairing.find_pairs(bench) == [pairing.Pair("cascade", "cascade-gold", "cascade-self")]


def test_per_turn_differences_grow_as_built_and_r1_is_zero(tmp_path):
    bench = load_bench([build_paired_run(tmp_path)])
    rows = {(r["metric"], r["turn"]): r for r in pairing.per_turn(bench, n_boot=500)}
    for k in range(1, 6):
        r = rows[("naturalness", k)]
        assert r["diff"] == pytest.approx(-3 * (k - 1), abs=1e-9 if k != 3 else 0.2)
        assert r["phase"] == PHASES[k - 1]
        assert r["ci_low"] <= r["diff"] <= r["ci_high"] and r["ci_high"] - r["ci_low"] > 0
        assert rows[("wer", k)]["diff"] == pytest.approx(0, abs=1e-12)
    assert rows[("naturalness", 3)]["n"] == 7 and rows[("naturalness", 3)]["dialogues"] == 7  # d2 R3 lacks it
    assert rows[("naturalness", 1)]["ci_low"] < 0 < rows[("naturalness", 1)]["ci_high"]  # R1: only noise
    assert rows[("naturalness", 5)]["ci_high"] < 0 and rows[("naturalness", 5)]["significant"]


def test_per_phase_means_and_the_worse_flag(tmp_path):
    bench = load_bench([build_paired_run(tmp_path)])
    rows = {(r["metric"], r["phase"]): r for r in pairing.per_phase(bench, n_boot=500)}
    assert rows[("naturalness", "chitchat")]["diff"] == pytest.approx(-1.5)  # mean of 0 and -3
    assert rows[("naturalness", "task")]["diff"] == pytest.approx(-10.5)  # mean of -9 and -12
    assert rows[("naturalness", "task")]["mean_gold"] == pytest.approx(75.5)
    assert pairing.worse(rows[("naturalness", "task")]) is True
    assert pairing.worse(rows[("wer", pairing.ALL)]) is False  # equal: not worse
    assert rows[("naturalness", pairing.ALL)]["n"] == 39 and rows[("naturalness", pairing.ALL)]["dialogues"] == 8


def test_report_has_the_paired_section_csvs_and_figure(tmp_path):
    files = write_report([build_paired_run(tmp_path)], tmp_path / "report")
    assert {"paired_phases.csv", "paired_turns.csv", "figures/paired_turns.png"} <= set(files)
    md = files["report.md"].read_text()
    section = md[md.index("## Gold context vs free-running (paired)"):].split("\n## ")[0]
    assert "cascade: cascade-self − cascade-gold" in section
    row = next(line for line in section.splitlines() if line.startswith("| naturalness"))
    assert "**-10.5 [" in row  # task: significantly worse, flagged
    html = files["report.html"].read_text()
    assert 'id="paired"' in html and 'class="drop"' in html
    with open(files["paired_turns.csv"]) as f:
        turns = list(csv.DictReader(f))
    assert {r["pair"] for r in turns} == {"cascade"}
    assert all(math.isfinite(float(r["diff"])) for r in turns)


def test_runs_without_a_pair_have_no_paired_section(tmp_path):
    run = build_paired_run(tmp_path)
    for s in ("cascade-self", "cascade-hot"):
        (run / "metrics" / f"{s}.jsonl").unlink()
        (run / "results" / f"{s}.jsonl").unlink()
    files = write_report([run], tmp_path / "report")
    assert "paired_turns.csv" not in files and "free-running" not in files["report.md"].read_text()


def test_too_few_dialogues_give_means_without_intervals(tmp_path):
    bench = load_bench([build_paired_run(tmp_path, dialogues=4)])
    rows = {(r["metric"], r["phase"]): r for r in pairing.per_phase(bench, n_boot=200)}
    r = rows[("naturalness", "task")]
    assert r["diff"] == pytest.approx(-10.5) and r["dialogues"] == 4
    assert math.isnan(r["ci_low"]) and math.isnan(r["ci_high"]) and not r["significant"]
    assert pairing.worse(r) is False
    files = write_report([tmp_path / "paired"], tmp_path / "report")
    md = files["report.md"].read_text()
    section = md[md.index("## Gold context vs free-running (paired)"):].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| naturalness"))
    assert "-10.5 (4 dial.)" in row and "**" not in row
