"""Durable storage of a run directory's files: append-only results, atomic JSON, reads that tolerate a
half-written tail.

Results: ``<out>/results/<system>.jsonl`` (``<system>.shard-i-of-n.jsonl`` per shard).

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
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spokentod.atomic import write_json
from spokentod.errors import SpokenTODError
from spokentod.rundir.layout import parse_results_name
from spokentod.rundir.records import Key, ResultRecord, key_of


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

    def append(self, record: ResultRecord) -> None:
        line = (json.dumps(record.to_json(), ensure_ascii=False, sort_keys=True, default=str) + "\n").encode("utf-8")
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


def read_json(path: Path) -> dict[str, Any]:
    """A run directory's JSON file; StoreError names the file when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read {path}: {e}") from None


def latest_by_system(folder: Path) -> dict[str, dict[tuple[str, int, int], dict[str, Any]]]:
    """system → (dialogue_id, turn, seed) → last record, over the ``<system>.jsonl`` and
    ``<system>.shard-i-of-n.jsonl`` files of `folder` (results/ or metrics/). Read-only: a half-written
    last line is ignored, not repaired. A later record (a retry, a rescoring) supersedes an earlier one."""
    out: dict[str, dict[tuple[str, int, int], dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        parsed = parse_results_name(path.name)
        if not parsed:
            continue
        records, _ = read_records(path)
        per = out.setdefault(parsed[0], {})
        for rec in records:
            try:
                per[(str(rec["dialogue_id"]), int(rec["turn"]), int(rec.get("seed") or 0))] = rec
            except (KeyError, TypeError, ValueError):
                raise StoreError(f"{path}: a record without dialogue_id/turn: {str(rec)[:120]}") from None
    return out
