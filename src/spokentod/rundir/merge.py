"""Joining shard (or partial) run directories into one (`bench merge`)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spokentod.atomic import atomic_write
from spokentod.rundir.layout import RESULTS, plan_name, results_name, run_meta_name
from spokentod.rundir.records import Key, Plan, RunMeta, key_of
from spokentod.rundir.scan import RunDir
from spokentod.rundir.store import StoreError, read_records, write_json_atomic


@dataclass
class MergeReport:
    out: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    gaps: dict[str, list[Key]] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)  # same key twice with the same content: one kept
    conflicts: list[str] = field(default_factory=list)  # cannot be merged: nothing written
    missing_shards: list[str] = field(default_factory=list)  # "i/n" of shards no input holds
    notes: list[str] = field(default_factory=list)  # e.g. a half-written last line that was left out

    @property
    def ok(self) -> bool:
        return not self.conflicts


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("text"), a.get("error")) == (b.get("text"), b.get("error"))


def merge_runs(dirs: list[str | os.PathLike], out: str | os.PathLike) -> MergeReport:
    """Join shard (or partial) run directories into `out`: check that they ran the same protocol, find
    keys missing from every input (gaps) and keys present twice (duplicates: identical ones are merged;
    different ones are conflicts). On conflict nothing is written."""
    out = Path(out)
    report = MergeReport(out)
    runs = [RunDir.scan(d) for d in dirs]
    if out.exists() and any(out.iterdir()):
        raise StoreError(f"{out} is not empty: merge writes a new directory")
    if any(out.resolve() == r.path.resolve() for r in runs):
        raise StoreError("--out must be a new directory, not one of the inputs")

    metas = [(r.path / name, m) for r in runs for name, m in r.metas.items()]
    hashes = {m.get("protocol_hash") for _, m in metas} | {p.get("protocol_hash") for r in runs for p in r.plans}
    if len(hashes - {None}) > 1:
        report.conflicts.append("the inputs were run with different configurations: " + ", ".join(
            f"{p} → {m.get('protocol_hash')}" for p, m in metas))
    idents = {json.dumps(m.get("systems"), sort_keys=True) for _, m in metas}
    if len(idents) > 1:
        report.conflicts.append("the inputs used different backends or prompts (run.json 'systems' differ)")
    shards: dict[int, set[int]] = {}
    for r in runs:
        for p in r.plans:
            i, n = p.get("shard", [1, 1])
            shards.setdefault(n, set()).add(i)
    for n, have in sorted(shards.items()):
        if n > 1 and (missing := sorted(set(range(1, n + 1)) - have)):
            report.missing_shards += [f"{i}/{n}" for i in missing]  # their keys are unknown: no plan came

    order: dict[Key, int] = {}
    for r in runs:
        for keys in r.planned().values():
            for k in keys:
                order.setdefault(k, len(order))
    merged: dict[str, dict[Key, tuple[dict[str, Any], Path]]] = {}
    for r in runs:
        for file, (system, _) in r.files.items():
            recs, dropped = read_records(file)
            if dropped:
                report.notes.append(f"{file}: left out a half-written last line ({dropped} bytes)")
            seen: dict[Key, dict[str, Any]] = {}
            for rec in recs:
                k = key_of(rec)
                if k in seen and not seen[k].get("error"):
                    msg = f"{system} {k[1]} turn {k[2]} seed {k[3]}: two finished records in {file}"
                    (report.duplicates if _same(seen[k], rec) else report.conflicts).append(msg)
                seen[k] = rec
            target = merged.setdefault(system, {})
            for k, rec in seen.items():
                if k in target:
                    other = target[k][1]
                    msg = f"{system} {k[1]} turn {k[2]} seed {k[3]}: in {other} and {r.path}"
                    (report.duplicates if _same(target[k][0], rec) else report.conflicts).append(
                        msg + ("" if _same(target[k][0], rec) else " with different replies"))
                    continue
                target[k] = (rec, r.path)
    for k in order:  # every planned key, once, in plan order
        if k not in merged.get(k[0], {}):
            report.gaps.setdefault(k[0], []).append(k)
    for system, recs in merged.items():
        report.counts[system] = {"records": len(recs), "errors": sum(1 for r, _ in recs.values() if r.get("error")),
                                 "missing": len(report.gaps.get(system, []))}
    if report.conflicts:
        return report

    (out / RESULTS).mkdir(parents=True, exist_ok=True)
    for system, recs in merged.items():
        keys = sorted(recs, key=lambda k: (order.get(k, len(order)), k))
        lines = []
        for k in keys:
            rec, src = recs[k]
            _link_audio(rec.get("audio_path"), src, out)
            lines.append(json.dumps(rec, ensure_ascii=False, sort_keys=True, default=str) + "\n")
        atomic_write(out / RESULTS / results_name(system), "".join(lines), fsync=True)
    first = metas[0][1] if metas else {}
    plan = Plan(shard=[1, 1], protocol_hash=next(iter(hashes - {None}), None),
                systems=sorted({s for r in runs for p in r.plans for s in p["systems"]}),
                seeds=sorted({s for r in runs for p in r.plans for s in p["seeds"]}),
                dialogues=[d for r in runs for p in r.plans for d in p["dialogues"]])
    write_json_atomic(out / plan_name(), plan.to_json(exclude_unset=True))
    meta = RunMeta(
        merged_from=[{"dir": str(r.path), "runs": {n: {k: m.get(k) for k in ("shard", "started", "ended", "status",
                                                                             "host", "git")}
                                                  for n, m in r.metas.items()}} for r in runs],
        protocol_hash=plan.protocol_hash, protocol=first.get("protocol"), config=first.get("config"),
        systems=first.get("systems"), speaks=first.get("speaks"), spokentod_version=first.get("spokentod_version"),
        status="merged", counts=report.counts,
        gaps={s: len(g) for s, g in report.gaps.items()}, missing_shards=report.missing_shards,
        duplicates=len(report.duplicates))
    write_json_atomic(out / run_meta_name(), meta.to_json(exclude_unset=True))
    return report


def _link_audio(audio: str | None, src: Path, out: Path) -> None:
    """The reply audio a record points at, hard-linked (or copied) into the merged directory."""
    if audio and not Path(audio).is_absolute() and (src / audio).exists():
        dst = out / audio
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            try:
                os.link(src / audio, dst)  # same filesystem: no copy
            except OSError:
                shutil.copy2(src / audio, dst)
