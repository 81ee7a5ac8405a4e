"""Append-only JSONL results: ``<out>/results/<system>.jsonl`` (``<system>.shard-i-of-n.jsonl`` per shard).

One record per (system, dialogue, user turn, seed) attempt. Durability discipline:

- A record is ONE ``os.write`` of one complete line, under the file's lock, so records never interleave
  and a killed process leaves at most one half-written line, always the last one.
- If the write fails (disk full, file size limit), the file is truncated back to where the record
  started: no half record is left behind, and the error is raised to stop the run.
- fsync is group commit: a per-file syncer thread fsyncs right after each write, and one fsync covers
  every record written meanwhile. Workers never wait for the disk (a 3-4 ms fsync per turn would cost
  several percent of a 50 ms backend call), a kill -9 loses nothing already written (it is in the page
  cache), and `close()` fsyncs before the run reports itself finished. A power cut can lose the last
  few records or leave a torn tail line; both are redone on resume.
- On resume `load(repair=True)` drops a final line that is incomplete or not valid JSON (truncating
  the file to the last complete line); damage anywhere else is an error, never silently skipped.

Retries: a key may have several records (a failed attempt, then a retry). The LAST record of a key is
its result; `final_records` gives those, `latest_attempts` the attempt counts.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spokentod.atomic import atomic_write, write_json
from spokentod.errors import SpokenTODError

Key = tuple[str, str, int, int]  # (system, dialogue_id, turn, seed)
_SHARD = re.compile(r"^(?P<system>.+?)(?:\.shard-(?P<i>\d+)-of-(?P<n>\d+))?\.jsonl$")


class StoreError(SpokenTODError):
    """A results file that cannot be read (damaged before its last line)."""


class StoreWriteError(SpokenTODError, OSError):
    """A record could not be written (disk full, read-only, ...); the file was left at the last record."""

    def __init__(self, path: Path, err: OSError):
        self.path, self.cause = path, err
        self.errno = err.errno
        why = err.strerror or str(err)
        super().__init__(f"cannot write results to {path}: {why} (errno {err.errno}); the file ends at the "
                         "last complete record; fix the disk problem and run the same command again to resume")


def key_of(record: dict[str, Any]) -> Key:
    return (record["system"], record["dialogue_id"], int(record["turn"]), int(record["seed"]))


def results_name(system: str, shard: tuple[int, int] = (1, 1)) -> str:
    i, n = shard
    return f"{system}.jsonl" if n == 1 else f"{system}.shard-{i}-of-{n}.jsonl"


def parse_results_name(name: str) -> tuple[str, tuple[int, int]] | None:
    """``text.shard-2-of-4.jsonl`` → ("text", (2, 4)); None for other files."""
    m = _SHARD.match(name)
    if not m:
        return None
    return m["system"], (int(m["i"]), int(m["n"])) if m["i"] else (1, 1)


def read_records(path: Path, repair: bool = False) -> tuple[list[dict[str, Any]], int]:
    """All complete records and the byte count of a dropped partial tail (0 if none).

    With `repair`, the partial tail is cut off the file so the next append starts on a fresh line.
    """
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else a line whose write was cut short
    records: list[dict[str, Any]] = []
    good = 0  # bytes up to the end of the last good line
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line.decode("utf-8")) if line.strip() else None
        except ValueError as e:  # also UnicodeDecodeError
            rest = b"\n".join(lines[i + 1:]) + tail
            if rest.strip(b"\x00\n\r\t "):  # a torn tail after a power cut may hold NULs, nothing else
                raise StoreError(f"{path}: line {i + 1} is damaged ({e}) and is not the last line; "
                                 "fix or remove it by hand") from None
            break
        if rec is not None:
            records.append(rec)
        good += len(line) + 1
    dropped = len(data) - good
    if dropped and repair:
        with path.open("r+b") as f:
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
    return records, dropped


def final_records(records: Iterable[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The result of each key: its last record (a retry supersedes the failed attempt before it)."""
    out: dict[Key, dict[str, Any]] = {}
    for r in records:
        out[key_of(r)] = r
    return out


def latest_attempts(records: Iterable[dict[str, Any]]) -> dict[Key, int]:
    out: dict[Key, int] = {}
    for r in records:
        out[key_of(r)] = max(out.get(key_of(r), 0), int(r.get("attempt", 1)))
    return out


class ResultFile:
    """One append-only JSONL file with thread-safe appends and a group-commit syncer thread."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._dirty = threading.Condition()
        self._pending = False  # written but not yet fsynced
        self._closing = False
        self._syncer: threading.Thread | None = None
        self.sync_error: OSError | None = None

    def load(self) -> tuple[list[dict[str, Any]], int]:
        """Records already there (half-written tail repaired away) and the number of bytes dropped."""
        with self._lock:
            return read_records(self.path, repair=True)

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if new:  # make the new directory entry durable too
                dfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            self._syncer = threading.Thread(target=self._sync_loop, name=f"fsync-{self.path.name}", daemon=True)
            self._syncer.start()
        return self._fd

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True, default=str) + "\n").encode("utf-8")
        with self._lock:
            if self.sync_error is not None:
                raise StoreWriteError(self.path, self.sync_error)
            start = None
            try:
                fd = self._open()
                start = os.fstat(fd).st_size
                view = memoryview(line)
                while view:  # os.write may write less than asked (a signal, a nearly full disk)
                    view = view[os.write(fd, view):]
            except OSError as e:
                if start is not None:
                    try:  # leave no half record: cut back to where this one started
                        os.ftruncate(self._fd, start)
                    except OSError:
                        pass
                raise StoreWriteError(self.path, e) from None
        with self._dirty:
            self._pending = True
            self._dirty.notify()

    def _sync_loop(self) -> None:
        while True:
            with self._dirty:
                while not self._pending and not self._closing:
                    self._dirty.wait()
                if not self._pending and self._closing:
                    return
                self._pending = False
            try:
                os.fsync(self._fd)
            except OSError as e:  # surfaced by the next append and by close()
                self.sync_error = e

    def close(self) -> None:
        """Fsync everything written and close; raises StoreWriteError if the disk refused it."""
        with self._lock:
            if self._fd is None:
                return
            with self._dirty:
                self._closing = True
                self._dirty.notify()
            self._syncer.join()
            try:
                os.fsync(self._fd)
            except OSError as e:
                self.sync_error = self.sync_error or e
            os.close(self._fd)
            self._fd, self._closing, self._pending = None, False, False
            if self.sync_error is not None:
                raise StoreWriteError(self.path, self.sync_error)


def write_json_atomic(path: Path, obj: Any) -> None:
    """A run directory's JSON (plan, run meta, summaries): fsynced, then renamed in, so readers see the old
    or the new file, never half."""
    write_json(path, obj, indent=2, ensure_ascii=False, sort_keys=False, default=str, fsync=True)


# ---------------------------------------------------------------- reading run directories (status, merge)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read {path}: {e}") from None


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
        metas = {p.name: _read_json(p) for p in sorted(path.glob("run*.json"))}
        plans = [_read_json(p) for p in sorted(path.glob("plan*.json"))]
        files = {p: parsed for p in sorted((path / "results").glob("*.jsonl"))
                 if (parsed := parse_results_name(p.name))}
        if not metas and not files:
            raise StoreError(f"{path} holds no run.json and no results/: not a bench run directory")
        return cls(path, metas, plans, files)

    def planned(self) -> dict[str, list[Key]]:
        """Expected keys per system, in plan order (dialogue, turn, seed)."""
        out: dict[str, list[Key]] = {}
        for plan in self.plans:
            for system in plan["systems"]:
                keys = out.setdefault(system, [])
                keys += [(system, did, t, seed) for did, turns in plan["dialogues"] for t in turns
                         for seed in plan["seeds"]]
        return out


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
    import shutil

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

    (out / "results").mkdir(parents=True, exist_ok=True)
    for system, recs in merged.items():
        keys = sorted(recs, key=lambda k: (order.get(k, len(order)), k))
        lines = []
        for k in keys:
            rec, src = recs[k]
            audio = rec.get("audio_path")
            if audio and not Path(audio).is_absolute() and (src / audio).exists():
                dst = out / audio
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    try:
                        os.link(src / audio, dst)  # same filesystem: no copy
                    except OSError:
                        shutil.copy2(src / audio, dst)
            lines.append(json.dumps(rec, ensure_ascii=False, sort_keys=True, default=str) + "\n")
        atomic_write(out / "results" / results_name(system), "".join(lines), fsync=True)
    first = metas[0][1] if metas else {}
    plan = {"shard": [1, 1], "protocol_hash": next(iter(hashes - {None}), None),
            "systems": sorted({s for r in runs for p in r.plans for s in p["systems"]}),
            "seeds": sorted({s for r in runs for p in r.plans for s in p["seeds"]}),
            "dialogues": [d for r in runs for p in r.plans for d in p["dialogues"]]}
    write_json_atomic(out / "plan.json", plan)
    write_json_atomic(out / "run.json", {
        "merged_from": [{"dir": str(r.path), "runs": {n: {k: m.get(k) for k in ("shard", "started", "ended", "status",
                                                                                "host", "git")}
                                                     for n, m in r.metas.items()}} for r in runs],
        "protocol_hash": plan["protocol_hash"], "protocol": first.get("protocol"), "config": first.get("config"),
        "systems": first.get("systems"), "spokentod_version": first.get("spokentod_version"),
        "status": "merged", "counts": report.counts,
        "gaps": {s: len(g) for s, g in report.gaps.items()}, "missing_shards": report.missing_shards,
        "duplicates": len(report.duplicates)})
    return report
