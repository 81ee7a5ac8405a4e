"""Reading a run directory as a whole: which files it holds, and per-system status (`bench status`)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spokentod.rundir.layout import RESULTS, parse_results_name
from spokentod.rundir.records import Key, Plan
from spokentod.rundir.store import StoreError, final_records, read_json, read_records


@dataclass
class RunDir:
    """What one run directory holds: run metadata and plans (per shard) and results files."""

    path: Path
    metas: dict[str, dict[str, Any]]  # file name → run.json content
    plans: list[dict[str, Any]]
    files: dict[Path, tuple[str, tuple[int, int]]]  # results file → (system, shard)

    @classmethod
    def scan(cls, path: str | os.PathLike) -> RunDir:
        path = Path(path)
        if not path.is_dir():
            raise StoreError(f"{path} is not a run directory (it does not exist or is not a folder)")
        metas = {p.name: read_json(p) for p in sorted(path.glob("run*.json"))}
        plans = [read_json(p) for p in sorted(path.glob("plan*.json"))]
        files = {p: parsed for p in sorted((path / RESULTS).glob("*.jsonl"))
                 if (parsed := parse_results_name(p.name))}
        if not metas and not files:
            raise StoreError(f"{path} holds no run.json and no results/: not a bench run directory")
        return cls(path, metas, plans, files)

    def planned(self) -> dict[str, list[Key]]:
        """Expected keys per system, in plan order (dialogue, turn, seed), over every shard's plan."""
        out: dict[str, list[Key]] = {}
        for plan in self.plans:
            for system, keys in Plan.model_validate(plan).keys().items():
                out.setdefault(system, []).extend(keys)
        return out

    def meta(self) -> dict[str, Any]:
        """run.json, or the first shard's run.*.json when there is no unsharded one ({} if none)."""
        return self.metas.get("run.json") or next(iter(self.metas.values()), {})

    def records(self) -> list[dict[str, Any]]:
        """Every results record of every file (all attempts), read-only."""
        return [rec for path in self.files for rec in read_records(path)[0]]


@dataclass
class SystemStatus:
    system: str
    planned: int = 0
    done: int = 0
    ok: int = 0
    errors: int = 0
    missing: int = 0
    retried: int = 0  # records superseded by a later attempt
    outside_plan: int = 0
    partial_bytes: int = 0  # a half-written last line (a run was killed mid-write; resume drops it)
    reasons: Counter = field(default_factory=Counter)


def run_status(path: str | os.PathLike) -> tuple[RunDir, list[SystemStatus]]:
    """Per-system counts of a run directory (read-only: a half-written tail is reported, not repaired)."""
    run = RunDir.scan(path)
    planned = run.planned()
    stats: dict[str, SystemStatus] = {s: SystemStatus(s) for s in planned}
    records: dict[str, list[dict[str, Any]]] = {}
    for file, (system, _) in run.files.items():
        st = stats.setdefault(system, SystemStatus(system))
        recs, dropped = read_records(file)
        st.partial_bytes += dropped
        records.setdefault(system, []).extend(recs)
    for system, st in stats.items():
        recs = records.get(system, [])
        finals = final_records(recs)
        want = set(planned.get(system, []))
        st.planned, st.retried = len(want), len(recs) - len(finals)
        st.outside_plan = sum(1 for k in finals if want and k not in want)
        for k, r in finals.items():
            if want and k not in want:
                continue
            st.done += 1
            if r.get("error"):
                st.errors += 1
                st.reasons[r.get("error_reason") or "unknown"] += 1
            else:
                st.ok += 1
        st.missing = len(want) - st.done if want else 0
    return run, sorted(stats.values(), key=lambda s: s.system)
