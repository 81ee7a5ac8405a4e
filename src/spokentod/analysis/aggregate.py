"""The report's numbers as tidy rows (one dict per row), from scored runs loaded by analysis/load.py.

A null metric is missing: it is left out of means and counted (with its reason), never read as zero.
Every function here returns plain rows so that the report can format them and write them as CSV.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import combinations
from typing import Any

from spokentod.analysis import stats
from spokentod.analysis.load import Bench, metric, order_metrics
from spokentod.metrics.judge_parse import FAILURES
from spokentod.metrics.registry import AUDIO_SECTIONS, SECTIONS, Output

DROP_POINTS = 10.0  # judge 0-100 scores and rates in %: a fall of more than 10 points between R_k and R_k+1
DROP_RELATIVE = 0.10  # every other metric: a change of more than 10 % of R_k's mean, in the worse direction
DROP_MIN_N = 3  # both means rest on at least this many replies: a change between single replies is noise
PHASES = ("chitchat", "transition", "task")


# ---------------------------------------------------------------- tables


def _est(e: stats.Estimate) -> dict[str, Any]:
    return {"mean": e.mean, "ci_low": e.lo, "ci_high": e.hi, "n": e.n}


def estimate(values: list[float], name: str) -> stats.Estimate:
    return stats.rate_ci(values) if metric(name).scale == "rate" else stats.mean_ci(values)


def system_table(bench: Bench, metrics: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Per system and metric: mean, 95 % CI, n, and how many scored replies lack the metric."""
    rows = []
    for name in metrics or bench.metrics:
        for s in bench.systems:
            scored = [r for r in bench.replies if r.system == s]
            vals = [r.values[name] for r in scored if name in r.values]
            rows.append({"system": s, "metric": name, **_est(estimate(vals, name)),
                         "missing": sum(1 for r in scored if name in r.missing)})
    return rows


def failure_table(bench: Bench) -> list[dict[str, Any]]:
    """Per failure type and system: mean severity (all judged replies, 0 when absent), severity among the
    replies where it is present, presence rate, and how often it was the judge's primary failure."""
    fails = sorted({m[5:-9] for m in bench.metrics if m.startswith("fail_") and m.endswith("_severity")} |
                   {m[5:-8] for m in bench.metrics if m.startswith("fail_") and m.endswith("_present")},
                   key=lambda f: (FAILURES.index(f) if f in FAILURES else len(FAILURES), f))
    rows = []
    for f in fails:
        sev, pres = f"fail_{f}_severity", f"fail_{f}_present"
        for s in bench.systems:
            mine = [r for r in bench.replies if r.system == s]
            e = stats.mean_ci([r.values[sev] for r in mine if sev in r.values])
            when = stats.mean_ci([r.values[sev] for r in mine if sev in r.values and r.values.get(pres, 0) > 0.5])
            rate = stats.rate_ci([r.values[pres] for r in mine if pres in r.values])
            rows.append({"failure": f, "system": s, "severity": e.mean, "severity_ci_low": e.lo,
                         "severity_ci_high": e.hi, "n": e.n, "severity_when_present": when.mean,
                         "presence_rate": rate.mean, "rate_ci_low": rate.lo, "rate_ci_high": rate.hi,
                         "n_present": round(rate.mean * rate.n) if rate.n else 0, "n_rate": rate.n,
                         "primary": sum(1 for r in mine if r.primary_failure == f)})
    return rows


def primary_failures(bench: Bench) -> list[dict[str, Any]]:
    """How often each failure was named primary, per system (incl. none, and replies never judged)."""
    rows = []
    for s in bench.systems:
        counts = Counter((r.primary_failure or "(not given)") if r.judged else "(not judged)"
                         for r in bench.replies if r.system == s)
        rows += [{"system": s, "primary_failure": k, "count": v} for k, v in sorted(counts.items())]
    return rows


def judge_drop(prev: float, cur: float, m: Output) -> tuple[float, str, bool]:
    """(change, unit, flagged) from R_k's mean to R_k+1's. See DROP_POINTS / DROP_RELATIVE.

    "Worse" follows the metric's direction (naturalness falling, WER or severity rising); for metrics with
    no better direction (length, duration) a plain decrease is flagged.
    """
    delta = cur - prev
    if m.scale in ("judge", "rate"):
        amount, unit, limit = delta * (100 if m.scale == "rate" else 1), "points", DROP_POINTS
    else:
        amount = delta / abs(prev) if prev else (0.0 if delta == 0 else math.copysign(math.inf, delta))
        unit, limit = "relative", DROP_RELATIVE
    return amount, unit, -amount * (m.better or 1) > limit


def per_turn(bench: Bench, metrics: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Mean per R1..Rn for every metric and system, with the change from the previous turn and a drop flag."""
    rows = []
    for name in metrics or bench.metrics:
        m = metric(name)
        for s in bench.systems:
            by: dict[int, list[float]] = defaultdict(list)
            for r in bench.replies:
                if r.system == s and r.ordinal is not None and name in r.values:
                    by[r.ordinal].append(r.values[name])
            prev: tuple[int, float, int] | None = None
            for k in sorted(by):
                e = estimate(by[k], name)
                change, unit, drop = (judge_drop(prev[1], e.mean, m) if prev and prev[0] == k - 1
                                      else (math.nan, "", False))
                drop = drop and min(e.n, prev[2]) >= DROP_MIN_N
                rows.append({"system": s, "metric": name, "turn": k, **_est(e), "change": change,
                             "change_unit": unit, "drop": drop})
                prev = (k, e.mean, e.n)
    return rows


def phases(bench: Bench) -> list[str]:
    seen = {r.phase or "(none)" for r in bench.replies}
    return [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))


def per_phase(bench: Bench, metrics: Iterable[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for name in metrics or bench.metrics:
        for s in bench.systems:
            for p in phases(bench):
                vals = bench.values(name, s, lambda r, p=p: (r.phase or "(none)") == p)
                rows.append({"system": s, "metric": name, "phase": p, **_est(estimate(vals, name))})
    return rows


def correlation_metrics(bench: Bench) -> tuple[list[str], list[str]]:
    """(audio-side, dialogue-side) metrics that vary: the two axes of Figure 3."""
    usable = [n for n in bench.metrics if len(set(bench.values(n))) > 1 and metric(n).section != "latency"
              and metric(n).scale != "rate"]
    audio = [n for n in usable if metric(n).section in AUDIO_SECTIONS]
    return audio, [n for n in usable if n not in audio]


def correlations(bench: Bench, names: list[str], systems: Iterable[str | None] = (None,)) -> list[dict[str, Any]]:
    """Pearson r for every pair of `names` over replies having both, pooled (system None → "all") and per
    system; 95 % CI by Fisher z."""
    rows = []
    for s in systems:
        mine = [r for r in bench.replies if s is None or r.system == s]
        for a, b in combinations(names, 2):
            c = stats.pearson_ci([r.values.get(a) for r in mine], [r.values.get(b) for r in mine])
            rows.append({"scope": s or "all", "metric_x": a, "metric_y": b, "r": c.r, "ci_low": c.lo,
                         "ci_high": c.hi, "n": c.n, "p": c.p})
    return rows


def pairwise(bench: Bench, metrics: Iterable[str], n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Every pair of systems, every metric: mean difference with a dialogue-level bootstrap 95 % CI."""
    rows = []
    for name in metrics:
        groups = {}
        for s in bench.systems:
            g: dict[str, list[float]] = defaultdict(list)
            for r in bench.replies:
                if r.system == s and name in r.values:
                    g[r.dialogue_id].append(r.values[name])
            groups[s] = g
        for a, b in combinations(bench.systems, 2):
            if not groups[a] or not groups[b]:
                continue
            d = stats.cluster_bootstrap_diff(groups[a], groups[b], n_boot=n_boot, seed=seed)
            rows.append({"metric": name, "system_a": a, "system_b": b, "mean_a": d.mean_a, "mean_b": d.mean_b,
                         "diff": d.diff, "ci_low": d.lo, "ci_high": d.hi, "p": d.p, "dialogues": d.clusters,
                         "paired": d.paired,
                         "significant": bool(d.lo > 0 or d.hi < 0) if math.isfinite(d.lo) else False})
    return rows


def latency(bench: Bench) -> list[dict[str, Any]]:
    rows = []
    for name in [n for n in bench.metrics if metric(n).section == "latency"]:
        for s in bench.systems:
            vals = bench.values(name, s)
            if vals:
                rows.append({"system": s, "stage": name, "mean": stats.clean(vals).mean(),
                             "p50": stats.percentile(vals, 50), "p90": stats.percentile(vals, 90), "n": len(vals)})
    return rows


def reason_head(reason: str) -> str:
    """'unparseable: Expecting value: line 1 column 1' → 'unparseable' (for counting; CSVs keep it whole)."""
    return reason.split(":", 1)[0].strip()[:80] or "unknown"


def missing_counts(bench: Bench) -> list[dict[str, Any]]:
    """Per system, metric and full reason: how many replies lack the metric."""
    c = Counter((r.system, m, why) for r in bench.replies for m, why in r.missing.items())
    return [{"system": s, "metric": m, "group": metric(m).section, "reason": why, "count": n}
            for (s, m, why), n in sorted(c.items(), key=lambda kv: (bench.systems.index(kv[0][0]), kv[0][1:]))]


def missing_replies(bench: Bench) -> list[dict[str, Any]]:
    """Per system, metric group and reason (its first words): how many replies lack something, and which
    metrics. Counts replies, not values: one unparseable judgement is one reply, not ten failure metrics."""
    replies: Counter = Counter()
    names: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for r in bench.replies:
        seen = set()
        for m, why in r.missing.items():
            k = (r.system, metric(m).section, reason_head(why))
            names[k].add(m)
            seen.add(k)
        replies.update(seen)
    return [{"system": s, "group": g, "reason": why, "replies": replies[(s, g, why)],
             "metrics": " ".join(order_metrics(names[(s, g, why)]))}
            for s, g, why in sorted(replies, key=lambda k: (bench.systems.index(k[0]), SECTIONS.index(k[1]), k[2]))]


def coverage(bench: Bench) -> list[dict[str, Any]]:
    """Per system: replies in results, failed replies (errors), scored replies, judged replies."""
    rows = []
    for run in bench.runs:
        for s in run.systems:
            label = bench.label[(run.name, s)]
            res = run.results.get(s, {})
            mine = [r for r in bench.replies if r.system == label]
            scored = {(r.dialogue_id, r.turn, r.seed) for r in mine}
            rows.append({"system": label, "run": run.name, "replies": len(res),
                         "errors": sum(1 for rec in res.values() if rec.get("error")),
                         "scored": len(mine), "not_scored": sum(1 for k in res if k not in scored),
                         "judged": sum(1 for r in mine if "naturalness" in r.values),
                         "judge_missing": sum(1 for r in mine if "naturalness" in r.missing)})
    return rows


def judge_parse(bench: Bench) -> list[dict[str, Any]]:
    """Per system and judge prompt: how the judge's replies read (metrics/summary.json `judge_parse`): as-is,
    repaired (jsonrepair fixed them), or failed (unparsed: every value of that judgement missing)."""
    rows = []
    for run in bench.runs:
        for s in run.systems:
            got = (((run.summary.get("systems") or {}).get(s) or {}).get("judge_parse") or {})
            for prompt, c in got.items():
                n = sum(int(c.get(k, 0)) for k in ("as_is", "repaired", "failed"))
                if n:
                    rows.append({"system": bench.label[(run.name, s)], "prompt": prompt, "replies": n,
                                 **{k: int(c.get(k, 0)) for k in ("as_is", "repaired", "failed")},
                                 **{f"{k}_rate": int(c.get(k, 0)) / n for k in ("as_is", "repaired", "failed")}})
    return rows


def error_counts(bench: Bench) -> list[dict[str, Any]]:
    """Failed replies (results records with an error), by reason."""
    rows = []
    for run in bench.runs:
        for s in run.systems:
            c = Counter(rec.get("error_reason") or reason_head(str(rec["error"]))
                        for rec in run.results.get(s, {}).values() if rec.get("error"))
            rows += [{"system": bench.label[(run.name, s)], "reason": k, "count": v} for k, v in c.most_common()]
    return rows


def judge_agreement(bench: Bench) -> list[dict[str, Any]]:
    """How each judge-free metric agrees with the judge: r with naturalness, consistency, and the failure it
    mirrors (repetition ↔ repetition severity, topic similarity ↔ topic drift, genericness ↔ generic)."""
    mirror = {"repetition_ngram": "fail_repetition_severity", "repetition_emb": "fail_repetition_severity",
              "topic_sim": "fail_topic_drift_severity", "genericness": "fail_generic_severity"}
    rows = []
    for name in [n for n in bench.metrics if metric(n).section == "judge-free"]:
        for judge in ("naturalness", "consistency", mirror.get(name)):
            if judge and judge in bench.metrics:
                c = stats.pearson_ci([r.values.get(name) for r in bench.replies],
                                     [r.values.get(judge) for r in bench.replies])
                rows.append({"judge_free": name, "judge_metric": judge, "r": c.r, "ci_low": c.lo,
                             "ci_high": c.hi, "n": c.n})
    return rows
