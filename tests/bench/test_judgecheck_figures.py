"""The judge-check's arithmetic on hand-made scores: pairwise accuracy (ties 1/2, missing counted apart, a
bootstrap over dialogues), agreement, and the validation bar and identity of metrics/validation.py."""

from __future__ import annotations

import math

import pytest

from spokentod.bench.judgecheck import figures as fig
from spokentod.metrics import validation as val


def _scores(rows):
    """rows: (kind, dialogue, turn, value or None) → Scores (reason 'judge gave prose' when None)."""
    return {(k, d, t): (v, None if v is not None else "judge gave prose") for k, d, t, v in rows}


def test_pairwise_accuracy_ties_missing_and_direction():
    s = _scores([("gold", "a", 1, 80), ("repeat", "a", 1, 20),     # gold wins
                 ("gold", "a", 3, 50), ("repeat", "a", 3, 50),     # tie: 1/2
                 ("gold", "b", 1, 10), ("repeat", "b", 1, 90),     # corruption wins
                 ("gold", "b", 3, None), ("repeat", "b", 3, 40),   # missing on the gold side
                 ("gold", "c", 1, 70)])                            # no repeat built here: not a pair
    pos = [("a", 1), ("a", 3), ("b", 1), ("b", 3), ("c", 1)]
    p = fig.pairwise(s, pos, "repeat", better=+1, n_boot=500)
    assert p["pairs"] == 3 and p["ties"] == 1 and p["dialogues"] == 2
    assert p["accuracy"] == pytest.approx(1.5 / 3)
    assert p["missing"] == 1 and p["missing_reasons"] == {"gold: judge gave prose": 1}
    assert 0 <= p["ci_low"] <= p["accuracy"] <= p["ci_high"] <= 1
    lower = fig.pairwise(s, pos, "repeat", better=-1, n_boot=500)  # lower is better: the verdicts flip
    assert lower["accuracy"] == pytest.approx(1.5 / 3) and fig.outcome(80, 20, -1) == 0.0


def test_cluster_bootstrap_resamples_dialogues():
    mean, lo, hi = fig.cluster_bootstrap_mean({"a": [1.0] * 9, "b": [0.0]}, n_boot=2000, seed=0)
    assert mean == pytest.approx(0.9)
    assert lo == 0.0 and hi == 1.0  # two dialogues: a resample can hold only a or only b
    m1, lo1, hi1 = fig.cluster_bootstrap_mean({"a": [1.0, 0.0]})
    assert m1 == 0.5 and math.isnan(lo1) and math.isnan(hi1)  # one dialogue: no interval


def test_agreement_figures():
    assert fig.kappa([1, 1, 0, 0], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert fig.kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert math.isnan(fig.kappa([1, 1], [1, 1]))
    a = _scores([("gold", "a", 1, 90), ("generic", "a", 1, 10), ("gold", "b", 1, 60), ("generic", "b", 1, 70)])
    b = _scores([("gold", "a", 1, 80), ("generic", "a", 1, 20), ("gold", "b", 1, 90), ("generic", "b", 1, None)])
    got = fig.between(a, b, binary=False)
    assert got["n"] == 3 and got["r"] is not None and got["mean_abs_diff"] == pytest.approx((10 + 10 + 30) / 3)
    pref = fig.preference_agreement(a, b, [("a", 1), ("b", 1)], ["generic"], +1)
    assert pref == {"pairs": 1, "same_verdict": 1.0}
    rt = fig.retest({("gold", "a", 1): [1, 1, 0], ("gold", "b", 1): [0, 0], ("gold", "c", 1): [1]}, binary=True)
    assert rt["n"] == 2 and rt["exact"] == 1.0 and rt["replies_with_one_value"] == 1


def _p(acc, lo, hi, pairs=24, dialogues=8):
    return {"accuracy": acc, "ci_low": lo, "ci_high": hi, "pairs": pairs, "dialogues": dialogues, "missing": 0}


def test_validation_bar_and_lines():
    good = _p(0.9, 0.8, 0.97)
    assert val.passes(good) == (True, "passes")
    assert not val.passes(_p(0.75, 0.5, 0.9))[0]  # CI touches chance
    assert not val.passes(_p(0.65, 0.55, 0.8))[0]  # below the accuracy bar
    assert not val.passes(_p(0.9, 0.8, 1.0, dialogues=3))[0]  # too few dialogues
    pw = {"off_topic": good, "repeat": _p(0.54, 0.41, 0.66), "memory": {"pairs": 0, "missing": 0}}
    v = val.verdict(pw)
    assert v["validated"] is False and v["passed"] == ["off_topic"] and set(v["short"]) == {"repeat"}
    line = val.scorer_line("consistency", pw, {"off_topic": "off-topic", "repeat": "repeat"})
    assert "0.54 [0.41, 0.66] vs repeat" in line and "not validated" in line and "0.90 [0.80, 0.97]" in line
    assert val.verdict({"off_topic": good, "repeat": good})["validated"] is True


def test_judge_key_is_model_prompts_and_decoding_not_repeats():
    d = {"backend": {"name": "openai", "model": "m", "base_url": "http://h/v1"}, "max_tokens": 400, "repeats": 1,
         "temperature": 0.0, "logprobs": False,
         "prompts": {"quality": {"sha256": "q1"}, "failures": {"sha256": "f1"}, "voice": {"sha256": "v"}}}
    k = val.judge_key(d)
    assert val.judge_key({**d, "repeats": 3}) == k
    assert val.judge_key({**d, "prompts": {**d["prompts"], "voice": {"sha256": "other"}}}) == k
    assert val.judge_key({**d, "prompts": {**d["prompts"], "quality": {"sha256": "q2"}}}) != k
    assert val.judge_key({**d, "backend": {**d["backend"], "model": "m2"}}) != k
    assert val.judge_key({**d, "max_tokens": 100}) != k


def test_judge_status_reads_the_store_by_identity(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOKENTOD_CACHE", str(tmp_path))
    d = {"backend": {"name": "openai", "model": "big-judge"}, "max_tokens": 400, "temperature": 0.0,
         "logprobs": True, "prompts": {"quality": {"sha256": "q"}, "failures": {"sha256": "f"}}}
    unchecked = val.judge_status(d)
    assert unchecked["validated"] is None and "no judge-check on record" in unchecked["lines"][0]
    weak = {"off_topic": _p(0.54, 0.41, 0.66), "repeat": _p(0.9, 0.8, 0.97)}
    payload = {"source_key": val.judge_key(d), "check": {"created": "2026-01-01T00:00:00+00:00"},
               "labels": {"off_topic": "off-topic"},
               "scorers": {"consistency": {"label": "consistency", "pairwise": weak}}}
    val.save(val.judge_key(d), "c1", payload)
    st = val.judge_status(d)
    assert st["validated"] is False and "0.54 [0.41, 0.66] vs off-topic" in st["lines"][0]
    assert val.judge_status({**d, "max_tokens": 48})["validated"] is None  # other settings: another judge
    assert val.judge_status(None) is None
