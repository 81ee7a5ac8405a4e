"""analysis.aggregate on synthetic run directories: every number checked against numpy/scipy computed
independently from the raw records (see test_analysis_fixtures.py for how the runs are built)."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from scipy import stats as sps
from test_analysis_fixtures import FAILS, N_DIALOGUES, SYSTEMS, build_run, n_turns, records

from spokentod.analysis import aggregate as agg
from spokentod.analysis.load import ReportError, load_bench, metric


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def bench(run):
    return load_bench([run])


def raw_values(run, system, name, where=lambda r: True):
    return np.array([r["metrics"][name] for r in records(run, system)
                     if r["metrics"].get(name) is not None and where(r)], dtype=float)


def test_load(bench):
    assert bench.systems == list(SYSTEMS)
    assert len(bench.replies) == 3 * (6 * 5 + 2 * 4) - 1  # e2e d6 R4 was never scored
    assert bench.runs[0].judge.weak
    assert "transcript" not in bench.metrics and "primary_failure" not in bench.metrics  # missing-only keys
    assert "naturalness" in bench.metrics and "lat_asr" in bench.metrics


def test_system_table_means_cis_and_n_exclude_missing(run, bench):
    rows = {(r["system"], r["metric"]): r for r in agg.system_table(bench)}
    for s in SYSTEMS:
        for name in ("naturalness", "consistency", "dnsmos_ovrl", "wer", "sim_gold", "lat_total"):
            x = raw_values(run, s, name)
            r = rows[(s, name)]
            assert r["n"] == len(x)
            if not len(x):
                assert math.isnan(r["mean"])
                continue
            lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
            assert r["mean"] == pytest.approx(x.mean())
            assert (r["ci_low"], r["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert rows[("cascade", "naturalness")]["n"] == 38 - 2 and rows[("cascade", "naturalness")]["missing"] == 2
    assert rows[("text", "dnsmos_ovrl")]["n"] == 0 and rows[("text", "dnsmos_ovrl")]["missing"] == 38
    assert rows[("e2e", "naturalness")]["n"] == 36  # one failed reply (null), one never scored


def test_failure_table_severity_rates_and_primary(run, bench):
    rows = {(r["system"], r["failure"]): r for r in agg.failure_table(bench)}
    assert {f for _, f in rows} == set(FAILS)
    for s in SYSTEMS:
        recs = records(run, s)
        primary = Counter(r["judge"].get("primary_failure") for r in recs)
        for f in FAILS:
            sev = raw_values(run, s, f"fail_{f}_severity")
            pres = raw_values(run, s, f"fail_{f}_present")
            r = rows[(s, f)]
            assert r["severity"] == pytest.approx(sev.mean()) and r["n"] == len(sev)
            assert r["presence_rate"] == pytest.approx(pres.mean()) and r["n_rate"] == len(pres)
            assert r["n_present"] == int(pres.sum())
            ci = sps.binomtest(int(pres.sum()), len(pres)).proportion_ci(0.95, method="wilson")
            assert (r["rate_ci_low"], r["rate_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
            when = sev[pres > 0.5]
            assert (math.isnan(r["severity_when_present"]) if not len(when)
                    else r["severity_when_present"] == pytest.approx(when.mean()))
            assert r["primary"] == primary[f]
    prim = {(r["system"], r["primary_failure"]): r["count"] for r in agg.primary_failures(bench)}
    assert prim[("cascade", "(not judged)")] == 1 and prim[("e2e", "(not judged)")] == 1
    for s in SYSTEMS:
        assert sum(v for (sys, _), v in prim.items() if sys == s) == len(records(run, s))


def independent_drops(means: dict[int, float], points: bool, better: int, ns: dict[int, int]) -> set[int]:
    out = set()
    for k, cur in means.items():
        if k - 1 in means and min(ns[k], ns[k - 1]) >= 3:
            prev = means[k - 1]
            change = (cur - prev) if points else (cur - prev) / abs(prev)
            if -change * better > (10 if points else 0.10):
                out.add(k)
    return out


def test_per_turn_means_and_drop_flags(run, bench):
    rows = agg.per_turn(bench)
    got = {(r["system"], r["metric"], r["turn"]): r for r in rows}
    for s in SYSTEMS:
        for name, points, better in (("naturalness", True, 1), ("wer", False, -1), ("consistency", True, 1),
                                     ("fail_generic_severity", True, -1), ("reply_words", False, 0)):
            by = defaultdict(list)
            for r in records(run, s):
                if r["metrics"].get(name) is not None:
                    by[r["turn_ordinal"]].append(r["metrics"][name])
            means = {k: float(np.mean(v)) for k, v in by.items()}
            for k, m in means.items():
                assert got[(s, name, k)]["mean"] == pytest.approx(m) and got[(s, name, k)]["n"] == len(by[k])
            flagged = {k for k in means if got[(s, name, k)]["drop"]}
            ns = {k: len(v) for k, v in by.items()}
            assert flagged == independent_drops(means, points, better or 1, ns), (s, name)
    # exactly the constructed drops, no others
    assert {(r["system"], r["turn"]) for r in rows if r["metric"] == "naturalness" and r["drop"]} == {("e2e", 3)}
    assert {(r["system"], r["turn"]) for r in rows if r["metric"] == "wer" and r["drop"]} == {("cascade", 4)}
    e2e3 = got[("e2e", "naturalness", 3)]
    assert e2e3["change_unit"] == "points" and e2e3["change"] == pytest.approx(-18, abs=4)
    assert got[("cascade", "wer", 4)]["change"] == pytest.approx(1.0, abs=0.1)


def test_presence_rate_drop_is_in_percentage_points():
    m = metric("fail_memory_present")
    assert agg.judge_drop(0.10, 0.25, m) == (pytest.approx(15.0), "points", True)
    assert agg.judge_drop(0.10, 0.15, m)[2] is False
    assert agg.judge_drop(0.0, 0.3, metric("wer"))[2] is True  # from 0: an infinite relative rise


def test_per_phase(run, bench):
    got = {(r["system"], r["metric"], r["phase"]): r for r in agg.per_phase(bench)}
    assert agg.phases(bench) == ["chitchat", "transition", "task"]
    for s in SYSTEMS:
        for p in ("chitchat", "transition", "task"):
            x = raw_values(run, s, "naturalness", lambda r, p=p: r["phase"] == p)
            assert got[(s, "naturalness", p)]["mean"] == pytest.approx(x.mean()) and got[(s, "naturalness", p)]["n"] \
                == len(x)


def test_correlations_match_scipy(run, bench):
    audio, dialogue = agg.correlation_metrics(bench)
    assert "dnsmos_ovrl" in audio and "naturalness" in dialogue and "lat_total" not in audio + dialogue
    rows = agg.correlations(bench, audio + dialogue, [None, "cascade"])
    got = {(r["scope"], r["metric_x"], r["metric_y"]): r for r in rows}
    for scope, systems in (("all", SYSTEMS), ("cascade", ("cascade",))):
        pairs = [(r["metrics"].get("dnsmos_ovrl"), r["metrics"].get("sim_gold")) for s in systems
                 for r in records(run, s)]
        pairs = np.array([p for p in pairs if None not in p])
        ref = sps.pearsonr(pairs[:, 0], pairs[:, 1])
        ci = ref.confidence_interval(0.95)
        r = got[(scope, "dnsmos_ovrl", "sim_gold")]
        assert r["n"] == len(pairs) and r["r"] == pytest.approx(ref.statistic)
        assert (r["ci_low"], r["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    agree = {(r["judge_free"], r["judge_metric"]): r for r in agg.judge_agreement(bench)}
    assert agree[("sim_gold", "naturalness")]["r"] > 0.8  # built to agree
    assert ("repetition_ngram", "fail_repetition_severity") in agree


def test_pairwise_differences(run, bench):
    rows = {(r["metric"], r["system_a"], r["system_b"]): r for r in agg.pairwise(bench, ["naturalness", "wer"])}
    r = rows[("naturalness", "cascade", "text")]
    a, b = raw_values(run, "cascade", "naturalness"), raw_values(run, "text", "naturalness")
    assert r["diff"] == pytest.approx(a.mean() - b.mean()) and r["paired"] and r["dialogues"] == N_DIALOGUES
    assert r["significant"] and r["ci_high"] < 0
    assert ("wer", "cascade", "text") not in rows  # text has no WER: nothing to compare


def test_latency_percentiles(run, bench):
    got = {(r["system"], r["stage"]): r for r in agg.latency(bench)}
    x = raw_values(run, "cascade", "lat_total")
    r = got[("cascade", "lat_total")]
    assert (r["mean"], r["p50"], r["p90"], r["n"]) == (pytest.approx(x.mean()), pytest.approx(np.percentile(x, 50)),
                                                        pytest.approx(np.percentile(x, 90)), len(x))
    assert ("cascade", "rtf_tts") in got and ("e2e", "lat_asr") not in got


def test_missing_errors_and_coverage(bench):
    miss = {(r["system"], r["metric"], r["reason"]): r["count"] for r in agg.missing_counts(bench)}
    assert miss[("cascade", "naturalness", "judge: score out of range: 140")] == 1
    assert miss[("cascade", "naturalness", "judge: unparseable JSON: Expecting value: line 1 column 1 (char 0)")] == 1
    assert miss[("text", "wer", "no audio (text-only system)")] == 38
    assert miss[("cascade", "voice_sim", "first agent turn: no earlier voice to compare")] == N_DIALOGUES
    assert miss[("e2e", "transcript", "reply failed")] == 1
    errors = {(r["system"], r["reason"]): r["count"] for r in agg.error_counts(bench)}
    assert errors == {("e2e", "audiolm: timeout"): 1, ("e2e", "audiolm: OutOfMemoryError"): 1}
    cov = {r["system"]: r for r in agg.coverage(bench)}
    assert (cov["e2e"]["replies"], cov["e2e"]["errors"], cov["e2e"]["scored"], cov["e2e"]["not_scored"]) == \
        (38, 2, 37, 1)
    assert cov["cascade"]["judge_missing"] == 2 and cov["cascade"]["judged"] == 36


@pytest.mark.parametrize("judge,weak", [("weak", True), ("strong", False), ("smollm2-unflagged", True),
                                        ("none", False), ("summary", True)])
def test_judge_weakness(tmp_path, judge, weak):
    b = load_bench([build_run(tmp_path, judge=judge)])
    assert b.runs[0].judge.weak is weak
    if judge == "summary":  # as `bench score` describes it: backend identity + weak flag and reason
        assert b.runs[0].judge.name == "smollm2 SmolLM2-135M-Instruct"
        assert "too small" in b.runs[0].judge.why


def test_two_runs_with_the_same_systems_get_run_labels(tmp_path):
    b = load_bench([build_run(tmp_path, "base", systems=("cascade", "text")),
                        build_run(tmp_path, "tuned", systems=("cascade",), judge="strong", seed=1)])
    assert b.systems == ["base/cascade", "text", "tuned/cascade"]
    assert sum(1 for r in b.replies if r.system == "tuned/cascade") == 38


def test_turn_ordinal_is_derived_when_absent_and_later_records_win(tmp_path):
    run = build_run(tmp_path, systems=("text",))
    path = run / "metrics" / "text.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for r in recs:
        del r["turn_ordinal"]
    rescored = dict(recs[0], metrics={**recs[0]["metrics"], "naturalness": 5.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in [*recs, rescored]) + '{"half": ')  # torn tail ignored
    b = load_bench([run])
    assert {(r.dialogue_id, r.ordinal) for r in b.replies} == {(f"d{d}", k) for d in range(N_DIALOGUES)
                                                               for k in range(1, n_turns(d) + 1)}
    assert next(r for r in b.replies if (r.dialogue_id, r.turn) == ("d0", 0)).values["naturalness"] == 5.0


def test_unknown_metrics_are_inferred():
    assert metric("fail_rudeness_severity").scale == "judge"
    assert metric("fail_rudeness_present").scale == "rate"
    assert metric("lat_vad").section == "latency"
    assert metric("utmos").section == "other"


def test_a_directory_without_metrics_is_refused(tmp_path):
    (tmp_path / "results").mkdir()
    with pytest.raises(ReportError, match="bench score"):
        load_bench([tmp_path])


def test_no_drop_is_flagged_between_means_of_too_few_replies():
    from spokentod.analysis.load import Bench, ReplyMetrics

    def reply(d: str, k: int, v: float) -> ReplyMetrics:
        return ReplyMetrics("s", "r", d, 2 * k, 0, None, k, {"reply_words": v}, {}, None, False)

    # R1 → R2 halves the length: over 3 dialogues a drop; when only 1 dialogue reaches R3, its fall is not
    few = [reply(f"d{i}", 1, 20.0) for i in range(3)] + [reply(f"d{i}", 2, 10.0) for i in range(3)]
    rows = agg.per_turn(Bench([], few + [reply("d0", 3, 1.0)], ["s"], {}), ["reply_words"])
    assert [(r["turn"], r["drop"]) for r in rows] == [(1, False), (2, True), (3, False)]
    assert rows[2]["change"] == pytest.approx(-0.9)  # the change is still shown
