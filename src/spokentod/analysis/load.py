"""Scored run directories as the report reads them (`load_bench`), and the display facts of each metric.

Input, per run directory (written by `bench run` and `bench score`):
    run.json (or run.shard-*.json)   config, system identities, judge info (``judge.weak``)
    results/<system>.jsonl           one record per reply attempt; the last attempt of a key counts
    metrics/<system>.jsonl           one record per (dialogue_id, turn[, seed]): metrics, missing reasons, judge
    metrics/summary.json             optional; may also carry judge info
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spokentod.errors import SpokenTODError
from spokentod.metrics.judge import failure_output
from spokentod.metrics.registry import SECTIONS, Output, catalog
from spokentod.rundir.layout import METRICS, RESULTS, SUMMARY
from spokentod.rundir.store import StoreError, latest_by_system, read_json


class ReportError(SpokenTODError):
    """A run directory the report cannot use (no metrics, unreadable files)."""


# ---------------------------------------------------------------- metric catalogue

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
    """A run's JSON file, {} when absent or not an object."""
    if not path.exists():
        return {}
    try:
        obj = read_json(path)
    except StoreError as e:
        raise ReportError(str(e)) from None
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
