"""`spokentod bench judge-check` end to end: the judge-free metrics on demo dialogues (through the CLI), and a
judge served by our own `spokentod serve` over loopback (the embedded SmolLM2 on llama.cpp); then the
verdicts reach `bench report` of runs scored with the same scorers."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from _serving import ServerThread
from typer.testing import CliRunner

from spokentod.analysis.report import write_report
from spokentod.bench.judgecheck.check import judge_check
from spokentod.bench.judgecheck.replies import CORRUPTIONS, KINDS
from spokentod.cli import app
from spokentod.data.source import DialogueSource
from spokentod.metrics import validation
from spokentod.metrics.judge_parse import FAILURES
from spokentod.rundir.store import latest_by_system
from spokentod.serve.app import create_app


@pytest.fixture(scope="module")
def judge_free(tmp_path_factory):
    """One judge-free check of 4 demo dialogues through the CLI, filed in a store of its own."""
    root = tmp_path_factory.mktemp("judge-check")
    old = os.environ.get("SPOKENTOD_CACHE")
    os.environ["SPOKENTOD_CACHE"] = str(root / "cache")
    try:
        res = CliRunner().invoke(app, ["bench", "judge-check", "--corpus", "demo", "--limit", "4", "--positions", "2",
                                       "--out", str(root / "out")])
        yield root / "out", res
    finally:
        if old is None:
            os.environ.pop("SPOKENTOD_CACHE", None)
        else:
            os.environ["SPOKENTOD_CACHE"] = old


def test_judge_free_metrics_prefer_gold_over_off_topic_and_repeats(judge_free):
    out, res = judge_free
    assert res.exit_code == 0, res.output
    result = json.loads((out / "judge_check.json").read_text())
    (st,) = result["sets"]
    assert st["type"] == "metrics" and "sim_gold" not in st["scorers"]  # gold is its own reference
    scorers = st["scorers"]
    # a reply from another dialogue fits this one's last turns less well than the gold reply does
    assert scorers["context_sim"]["pairwise"]["off_topic"]["accuracy"] > 0.5
    # a verbatim repeat of the previous agent turn overlaps the history completely; gold does not
    for name in ("repetition_ngram", "repetition_emb"):
        assert scorers[name]["pairwise"]["repeat"]["accuracy"] == 1.0
    # every built corruption is one pair (scored or missing with its reason), per scorer
    for s in scorers.values():
        for kind in CORRUPTIONS:
            p = s["pairwise"][kind]
            assert p["pairs"] + p["missing"] == result["replies"][kind]
            assert sum(p["missing_reasons"].values()) == p["missing"]
    assert "similarity to context" in res.output and "validated" in res.output and "judge_check.json" in res.output

    rows = list(csv.DictReader((out / "pairwise.csv").open()))
    assert len(rows) == len(scorers) * len(CORRUPTIONS)
    replies = [json.loads(x) for x in (out / "replies.jsonl").read_text().splitlines()]
    assert len(replies) == sum(result["replies"].values()) and {r["kind"] for r in replies} == set(KINDS)
    assert "Judge check" in (out / "judge_check.html").read_text()


def test_judge_free_verdicts_reach_the_report_of_a_run_scored_with_them(judge_free):
    out, _ = judge_free
    result = json.loads((out / "judge_check.json").read_text())
    assert result["stored"] and all(Path(p).is_file() for p in result["stored"])
    old = os.environ.get("SPOKENTOD_CACHE")
    os.environ["SPOKENTOD_CACHE"] = str(out.parent / "cache")
    try:
        written = write_report([out / "scored" / "judge-free"], out / "report")
    finally:
        os.environ.pop("SPOKENTOD_CACHE") if old is None else os.environ.__setitem__("SPOKENTOD_CACHE", old)
    md = written["report.md"].read_text()
    assert "Which scores can be trusted" in md
    ctx = result["sets"][0]["scorers"]["context_sim"]["pairwise"]["off_topic"]
    assert validation.est(ctx) in md  # the figures themselves, not just a flag
    # without the store the same report says the metrics are unvalidated
    os.environ["SPOKENTOD_CACHE"] = str(out.parent / "empty-cache")
    try:
        md2 = write_report([out / "scored" / "judge-free"], out / "report2")["report.md"].read_text()
    finally:
        os.environ.pop("SPOKENTOD_CACHE") if old is None else os.environ.__setitem__("SPOKENTOD_CACHE", old)
    assert "no judge-check on record" in md2


def test_judge_free_flags_are_raised_by_their_corruptions_and_fill_the_failure_table(judge_free):
    out, res = judge_free
    (st,) = json.loads((out / "judge_check.json").read_text())["sets"]
    rates = {(f["failure"], f["kind"]): f for f in st["flag_rates"]}
    expected = {f["failure"]: f["kind"] for f in st["flag_rates"] if f["expected"]}
    assert expected == {"jf_topic_drift": "off_topic", "jf_repetition": "repeat", "jf_generic": "generic"}
    # a verbatim repeat always repeats the agent's trigrams; the gold reply of a demo dialogue never does
    assert rates[("jf_repetition", "repeat")]["rate"] == 1.0 and rates[("jf_repetition", "gold")]["rate"] == 0.0
    for failure, kind in expected.items():
        assert rates[(failure, kind)]["rate"] > rates[(failure, "gold")]["rate"], failure
    assert "jf_repetition" in res.output  # the flag table of the printout
    # a run scored with the flags gets a failure table (Table 2) without any judge
    old = os.environ.get("SPOKENTOD_CACHE")
    os.environ["SPOKENTOD_CACHE"] = str(out.parent / "cache")
    try:
        md = write_report([out / "scored" / "judge-free"], out / "report-flags")["report.md"].read_text()
    finally:
        os.environ.pop("SPOKENTOD_CACHE") if old is None else os.environ.__setitem__("SPOKENTOD_CACHE", old)
    table2 = md.split("Failure taxonomy (Table 2)")[1].split("\n## ")[0]
    assert "jf repetition" in table2 and "No failure-taxonomy verdicts" not in table2


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~50 judge calls of a 135M model on 2 shared cores
def test_judge_check_against_a_judge_served_over_loopback(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOKENTOD_CACHE", str(tmp_path / "cache"))
    # the server's response cache lets the second (identical) judge replay the first one's answers
    served = create_app({"llm": {"name": "llamacpp", "model": "smollm2", "threads": 1, "id": "smol-judge"},
                         "cache": True})
    with ServerThread(served) as s:
        spec = {"name": "openai", "model": "smol-judge", "base_url": s.url, "timeout": 600}
        result = judge_check(DialogueSource(corpus="demo", limit=2), tmp_path / "out", judges=[spec, spec],
                             metrics=None, positions=1, judge_repeats=2, judge_max_tokens=48, n_boot=200, probe=0,
                             workers=1)  # one at a time: a repeat reuses the prompt llama.cpp just read
        # a judge cut to 4 tokens cannot answer in JSON: after 3 replies the check stops asking, and says so
        mute = judge_check(DialogueSource(corpus="demo", limit=2), tmp_path / "mute", judges=[spec], metrics=None,
                           positions=1, judge_max_tokens=4, probe=3, store=False, workers=1)
    sets = result["sets"]
    assert [x["type"] for x in sets] == ["judge", "judge"]
    j = sets[0]
    assert j["judge"]["backend"]["base_url"] == s.url and j["judge"]["repeats"] == 2
    n_replies = sum(result["replies"].values())
    for counts in j["judgements"].values():
        assert counts["replies"] == n_replies and counts["judged"] + counts["missing"] == n_replies
        assert sum(counts["missing_reasons"].values()) == counts["missing"]
        assert all(isinstance(r, str) and r.strip() for r in counts["missing_reasons"])
    # the figures exist for every judge score; a missing judgement is a counted pair with a reason, never a 0
    assert {"naturalness", "consistency", *(f"fail_{f}_present" for f in FAILURES)} <= set(j["scorers"])
    for s_ in j["scorers"].values():
        for kind in CORRUPTIONS:
            p = s_["pairwise"][kind]
            assert p["pairs"] + p["missing"] == result["replies"][kind]
            assert sum(p["missing_reasons"].values()) == p["missing"]
            assert all(r.strip() for r in p["missing_reasons"])
    records = latest_by_system(Path(j["run_dir"]) / "metrics")
    for recs in records.values():
        for r in recs.values():
            for name, v in r["metrics"].items():
                assert v is not None or r["missing"].get(name), (name, r["missing"])
    assert len(j["flag_rates"]) == len(FAILURES) * len(KINDS)
    assert set(j["test_retest"]) == set(j["scorers"])
    for rt in j["test_retest"].values():
        assert rt["n"] >= 0 and (rt["n"] == 0 or rt["exact"] is not None)
    assert result["agreement"] and {a["sets"][1] for a in result["agreement"]} == {"judge-2"}
    for a in result["agreement"]:
        assert a["n"] == 0 or a["exact"] == 1.0  # the same judge, replayed: full agreement where both answered

    # every report of a run scored with this judge is marked with the judge's figures
    status = validation.judge_status(j["judge"])
    assert status["check"] is not None and status["validated"] is j["validated"]
    md = write_report([Path(j["run_dir"])], tmp_path / "report")["report.md"].read_text()
    head = next(ln for ln in status["lines"] if " consistency:" in ln)
    assert ("pairwise accuracy" in head) or ("no pairs could be scored" in head)
    assert ("NOT validated" in md and "Judge not validated" in md) if not status["validated"] else "validated" in md

    (m,) = mute["sets"]
    assert m["gave_up"] and "first 3 replies" in m["gave_up"]
    for counts in m["judgements"].values():
        assert counts["judged"] == 0 and counts["replies"] == sum(mute["replies"].values())
        assert sum(n for r, n in counts["missing_reasons"].items() if r == m["gave_up"]) == counts["replies"] - 3
    assert m["validated"] is False
