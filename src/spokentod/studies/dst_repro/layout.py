"""The reproduction's out dir: where each stage puts its files, the small JSON files every stage reads and
writes, the hashes that tell whether finished work is still valid, and <out>/timings.json."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spokentod import atomic
from spokentod.dst.train.runlog import read_json, step_log  # noqa: F401  (the study reads run logs too)

# <out>/: the pin of the speech adapter phase 2 started from (file hashes), and a copy of its sidecar
ADAPTER_PIN, ADAPTER_SIDECAR = "speech_adapter.json", "speech_adapter.sidecar.json"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name) or "_"


def data_dir(out: Path) -> Path:
    return out / "data"


def run_dir(out: Path, condition: str, seed: int) -> Path:
    return out / "runs" / slug(condition) / f"seed{seed}"


def train_unit(condition: str, seed: int) -> str:
    """A training run's key in timings.json's units."""
    return f"train:{condition}/seed{seed}"


def eval_dir(out: Path, condition: str, seed: int, test_set: str) -> Path:
    return out / "eval" / slug(condition) / f"seed{seed}" / test_set


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    atomic.write_json(path, obj, indent=1, default=str)


def read_lines(path: Path) -> list[str]:
    try:
        return [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except OSError:
        return []


def json_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def diff_paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b), key=str)
                for p in diff_paths(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".") or "<root>"]


class Timings:
    """<out>/timings.json: every stage invocation (wall time, what it did or skipped) and per-unit totals.

    A session's end kills a study without unwinding, so the running invocation's wall time, and the running
    unit's time so far, are written every ``heartbeat_s`` seconds and at every finished unit. The next
    invocation adds a cut-off unit's time to that unit's total (so a training run resumed from its checkpoint
    counts both parts) and lists it under ``cut_off``."""

    def __init__(self, out: Path, heartbeat_s: float = 60.0):
        self.path = out / "timings.json"
        self.data = read_json(self.path) or {"invocations": [], "stages": {}, "units": {}}
        if cut := self.data.pop("running_unit", None):  # a kill cut this unit off: both totals count it
            for totals in (self.data["units"], self.data.setdefault("cut_off", {})):
                totals[cut["key"]] = totals.get(cut["key"], 0.0) + cut["seconds"]
        self.heartbeat_s = heartbeat_s
        self._running: tuple[dict, float, float] | None = None  # (record, t0, stage total before it)
        self._unit: tuple[str, float] | None = None  # (key, t0) of the unit under way
        self._lock = threading.Lock()  # the heartbeat thread saves too
        self.stopped = threading.Event()  # set: the heartbeat ends

    def save(self) -> None:
        with self._lock:
            if self._running:
                record, t0, before = self._running
                record["wall_s"] = round(time.perf_counter() - t0, 3)
                self.data["stages"][record["stage"]] = before + record["wall_s"]
            if unit := self._unit:  # read once: the main thread may end the unit meanwhile
                self.data["running_unit"] = {"key": unit[0], "seconds": round(time.perf_counter() - unit[1], 3)}
            else:
                self.data.pop("running_unit", None)
            self.data["total_wall_s"] = sum(self.data["stages"].values())
            write_json(self.path, self.data)

    def unit(self, key: str, seconds: float) -> None:
        with self._lock:
            self.data["units"][key] = self.data["units"].get(key, 0.0) + seconds
        self.save()

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Time one unit (a training run); a kill mid-unit leaves its time so far on disk."""
        self._unit = (key, time.perf_counter())
        try:
            yield
        finally:
            seconds = time.perf_counter() - self._unit[1]
            self._unit = None
            self.unit(key, seconds)  # a unit that raised still took this long

    @contextlib.contextmanager
    def stage(self, name: str, command: str | None) -> Iterator[dict]:
        work: dict[str, Any] = {}
        record = {"stage": name, "started": now_iso(), "command": command, "work": work, "finished": False}
        self.data["invocations"].append(record)
        self._running = (record, time.perf_counter(), self.data["stages"].get(name, 0.0))
        self.stopped = threading.Event()
        beat = threading.Thread(target=self._beat, daemon=True)
        beat.start()
        try:
            yield work
            record["finished"] = True
        finally:
            self.stopped.set()
            beat.join()
            self.save()
            self._running = None

    def _beat(self) -> None:
        while not self.stopped.wait(self.heartbeat_s):
            try:
                self.save()
            except RuntimeError:  # the stage changed its work record mid-write: the next beat writes it
                pass


def timed(timings: Timings | None, key: str) -> contextlib.AbstractContextManager:
    return timings.timed(key) if timings else contextlib.nullcontext()
