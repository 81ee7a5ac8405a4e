"""Read scored run directories and compute the report's numbers as tidy rows (one dict per row).

Input, per run directory (written by `bench run` and `bench score`):
    run.json (or run.shard-*.json)   config, system identities, judge info (``judge.weak``)
    results/<system>.jsonl           one record per reply attempt; the last attempt of a key counts
    metrics/<system>.jsonl           one record per (dialogue_id, turn[, seed]): metrics, missing reasons, judge
    metrics/summary.json             optional; may also carry judge info

A null metric is missing: it is left out of means and counted (with its reason), never read as zero.
Every function here returns plain rows so that report.py can format them and write them as CSV.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from spokentod.analysis import stats
from spokentod.errors import SpokenTODError
from spokentod.metrics.judge import FAILURES, failure_output
from spokentod.metrics.registry import AUDIO_SECTIONS, SECTIONS, Output, catalog
from spokentod.rundir.layout import METRICS, RESULTS, SUMMARY
from spokentod.rundir.store import StoreError, latest_by_system

DROP_POINTS = 10.0  # judge 0-100 scores and rates in %: a fall of more than 10 points between R_k and R_k+1
DROP_RELATIVE = 0.10  # every other metric: a change of more than 10 % of R_k's mean, in the worse direction
PHASES = ("chitchat", "transition", "task")


class ReportError(SpokenTODError):
    """A run directory the report cannot use (no metrics, unreadable files)."""


# ---------------------------------------------------------------- metric catalogue

TABLE1 = ("dnsmos_ovrl", "wer", "naturalness", "consistency")  # the reference paper's Table 1 columns


@functools.cache
def _catalog() -> dict[str, Output]:
    return catalog()  # once per process: loading the metric modules and plug-ins is not free


def metric(name: str) -> Output:
    """An output's display facts from the metric registry, or facts inferred from the name for outputs
    the registry does not know (a plug-in's, or an older run's: a new fail_*, lat_*...)."""
    if name in _catalog():
        return _catalog()[name]
    if m := re.fullmatch(r"fail_(.+)_(severity|present)", name):
        return failure_output(m[1], m[2])
    if name.startswith("lat_"):
        return Output(name, name[4:].replace("_", " "), "latency", -1, unit="s")
    if name.startswith("dnsmos"):
        return Output(name, name.upper(), "audio quality", +1)
    return Output(name, name.replace("_", " "), "other", 0)


def order_metrics(names: Iterable[str]) -> list[str]:
    known = list(_catalog())
    return sorted(set(names), key=lambda n: (SECTIONS.index(metric(n).section), known.index(n) if n in known
                                             else len(known), n))


# ---------------------------------------------------------------- loading


@dataclass
class JudgeInfo:
    """The judge a run was scored with, as recorded, and whether it is too weak to trust."""

    name: str | None
    weak: bool
    why: str  # how `weak` was decided, for the banner


@dataclass
class ReplyMetrics:
    """One scored reply as the report reads it: its metric values and what is missing."""

    system: str  # display label (run-qualified when two runs share a system name)
    run: str
    dialogue_id: str
    turn: int
    seed: int
    phase: str | None
    ordinal: int | None  # R1..Rn: position among the dialogue's user turns
    values: dict[str, float]  # present metrics only
    missing: dict[str, str]  # metric (or transcript, primary_failure...) → reason
    primary_failure: str | None
    judged: bool  # the failure taxonomy has a verdict for this reply


@dataclass
class Run:
    path: Path
    name: str
    meta: dict[str, Any]
    summary: dict[str, Any]
    judge: JudgeInfo
    systems: list[str]  # raw system names, run.json order first
    results: dict[str, dict[tuple, dict[str, Any]]] = field(default_factory=dict)  # system → key → last record


@dataclass
class Bench:
    runs: list[Run]
    replies: list[ReplyMetrics]
    systems: list[str]  # labels, in display order
    label: dict[tuple[str, str], str]  # (run name, raw system) → label
    names: set[str] = field(default_factory=set)  # every key of any record's "metrics", null or not

    @property
    def metrics(self) -> list[str]:
        return order_metrics(self.names)

    def values(self, name: str, system: str | None = None, where: Callable[[ReplyMetrics], bool] | None = None
               ) -> list[float]:
        return [r.values[name] for r in self.replies if name in r.values and (system is None or r.system == system)
                and (where is None or where(r))]


def _read_jsonl_dir(folder: Path) -> dict[str, dict[tuple, dict[str, Any]]]:
    try:
        return latest_by_system(folder)
    except StoreError as e:
        raise ReportError(str(e)) from None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read {path}: {e}") from None
    return obj if isinstance(obj, dict) else {}


def find_judge(meta: dict[str, Any], summary: dict[str, Any]) -> JudgeInfo:
    """The run's judge and whether it is too weak to trust.

    An explicit ``weak`` flag wins (run.json ``judge``, else the scoring config, else metrics/summary.json).
    Without one, a judge whose identity mentions SmolLM2 (the embedded 135M model) is weak.
    """
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    places = [meta.get("judge"), (meta.get("metrics") or {}).get("judge") if isinstance(meta.get("metrics"), dict)
              else None, (meta.get("scoring") or {}).get("judge") if isinstance(meta.get("scoring"), dict) else None,
              summary.get("judge"), config.get("judge"),
              (config.get("metrics") or {}).get("judge") if isinstance(config.get("metrics"), dict) else None]
    infos = [p for p in places if isinstance(p, dict | str) and p]
    if not infos:
        return JudgeInfo(None, False, "no judge recorded in run.json or metrics/summary.json")
    name = None
    for info in infos:
        name = name or _judge_name(info)
    for info in infos:
        if isinstance(info, dict) and isinstance(info.get("weak"), bool):
            why = info.get("weak_reason") or info.get("reason") or "flagged weak by the scorer"
            return JudgeInfo(name, info["weak"], why if info["weak"] else "flagged trustworthy by the scorer")
    text = json.dumps(infos, default=str).lower()
    if "smollm2" in text or "smollm-2" in text:
        return JudgeInfo(name, True, "the embedded SmolLM2-135M judge (no `weak` flag recorded: inferred from its name)")
    return JudgeInfo(name, False, "no `weak` flag recorded; the judge's name is not a known weak model")


def _judge_name(info: dict | str) -> str | None:
    if isinstance(info, str):
        return info
    ident = info.get("identity") or info.get("backend")  # run.json style / metrics/summary.json style
    for src in (ident if isinstance(ident, dict) else {}, info):
        model, name = src.get("model"), src.get("name")
        if model or name:
            return " ".join(str(x) for x in (name, model) if x)
    return ident if isinstance(ident, str) else None


def _system_order(meta: dict[str, Any], names: Iterable[str]) -> list[str]:
    first = list(meta.get("systems") or {}) if isinstance(meta.get("systems"), dict) else []
    return [s for s in first if s in set(names)] + sorted(set(names) - set(first))


def _ordinals(records: Iterable[dict[str, Any]]) -> dict[tuple, int]:
    """R1..Rn from turn indices (results and metrics records), for records written without `turn_ordinal`."""
    turns: dict[str, set[int]] = defaultdict(set)
    for rec in records:
        turns[str(rec["dialogue_id"])].add(int(rec["turn"]))
    return {(d, t): i + 1 for d, ts in turns.items() for i, t in enumerate(sorted(ts))}


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def load_bench(dirs: Iterable[str | Path]) -> Bench:
    runs: list[Run] = []
    raw: list[tuple[Run, str, dict[str, Any]]] = []
    for d in dirs:
        path = Path(d)
        if not path.is_dir():
            raise ReportError(f"{path} is not a directory")
        meta = _read_json(path / "run.json") or next((_read_json(p) for p in sorted(path.glob("run*.json"))), {})
        summary = _read_json(path / METRICS / SUMMARY)
        metrics = _read_jsonl_dir(path / METRICS)
        if not metrics:
            raise ReportError(f"{path} has no metrics/<system>.jsonl: run `spokentod bench score {path}` first")
        results = _read_jsonl_dir(path / RESULTS)
        name = path.resolve().name
        if any(r.name == name for r in runs):
            name = f"{name}#{len(runs) + 1}"
        run = Run(path, name, meta, summary, find_judge(meta, summary),
                  _system_order(meta, set(metrics) | set(results)), results)
        runs.append(run)
        for system in run.systems:
            raw += [(run, system, rec) for rec in metrics.get(system, {}).values()]
    shared = Counter(s for r in runs for s in r.systems)
    label = {(r.name, s): (f"{r.name}/{s}" if shared[s] > 1 else s) for r in runs for s in r.systems}

    ordinals: dict[tuple[str, str], dict[tuple, int]] = {}  # only needed for records without turn_ordinal
    replies, names = [], set()
    for run, system, rec in raw:
        names.update(rec.get("metrics") or {})
        values, missing = {}, {str(k): str(v) for k, v in (rec.get("missing") or {}).items()}
        for k, v in (rec.get("metrics") or {}).items():
            x = _number(v)
            if x is not None:
                values[k] = x
            else:
                missing.setdefault(k, "null (no reason given)" if v is None else f"not a number: {str(v)[:40]}")
        ordinal = rec.get("turn_ordinal")
        if ordinal is None:
            if (run.name, system) not in ordinals:
                ordinals[(run.name, system)] = _ordinals([*run.results.get(system, {}).values(),
                                                             *(r for ru, sy, r in raw if ru is run and sy == system)])
            ordinal = ordinals[(run.name, system)].get((str(rec["dialogue_id"]), int(rec["turn"])))
        judge = rec.get("judge") if isinstance(rec.get("judge"), dict) else {}
        primary = judge.get("primary_failure")
        replies.append(ReplyMetrics(label[(run.name, system)], run.name, str(rec["dialogue_id"]), int(rec["turn"]),
                             int(rec.get("seed") or 0), rec.get("phase"), int(ordinal) if ordinal else None,
                             values, missing, primary if isinstance(primary, str) and primary else None,
                             any(k.startswith("fail_") for k in values)))
    return Bench(runs, replies, [label[(r.name, s)] for r in runs for s in r.systems], label, names)


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
            prev: tuple[int, float] | None = None
            for k in sorted(by):
                e = estimate(by[k], name)
                change, unit, drop = (judge_drop(prev[1], e.mean, m) if prev and prev[0] == k - 1
                                      else (math.nan, "", False))
                rows.append({"system": s, "metric": name, "turn": k, **_est(e), "change": change,
                             "change_unit": unit, "drop": drop})
                prev = (k, e.mean)
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
