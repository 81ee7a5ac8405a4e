"""A bench run as a whole (`spokentod bench run`): load and shard the dialogues, render their audio, build
the systems, plan, run the turns (bench/runner.py) and keep run.json and plan.json up to date. The
directory it writes is described in spokentod/rundir.

Resume: records already there are kept; turns whose last record is an error are redone (a new attempt)
unless retry_errors=False. In `history: self` mode a redone turn also redoes the later turns of its
dialogue, whose context depended on it. Resuming with a different protocol (dataset, sample, systems,
params, prompts, backend identities) is refused: records made under two protocols must not mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spokentod import __version__
from spokentod.backends.cache import Cache
from spokentod.backends.limits import BackendWrapper, all_remote
from spokentod.bench.audio_in import ensure_audio
from spokentod.bench.config import BenchConfig, ConfigError, load_config, parse_config
from spokentod.bench.lock import RunLock
from spokentod.bench.runner import Runner, console, now_iso
from spokentod.data.schema import Dialogue
from spokentod.data.source import load_dialogues
from spokentod.errors import BenchError, Problem
from spokentod.provenance import git_info, host_info, scrub
from spokentod.rundir import layout
from spokentod.rundir.records import Plan, RunMeta, Session
from spokentod.rundir.store import (
    ResultFile,
    StoreWriteError,
    final_records,
    latest_attempts,
    write_json_atomic,
)
from spokentod.systems import build_system, speaks


def shard_of(dialogue_id: str, n: int) -> int:
    """1-based shard of a dialogue: a stable hash, so every machine agrees without talking."""
    return int(hashlib.sha256(dialogue_id.encode("utf-8")).hexdigest()[:16], 16) % n + 1


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise ValueError(f"shard must look like i/n with 1 <= i <= n (e.g. 2/4), got {text!r}")
    return int(m[1]), int(m[2])


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [path or "<root>"]


@dataclass
class RunSummary:
    out: Path
    shard: tuple[int, int]
    status: str  # finished | interrupted | failed
    counts: dict[str, dict[str, int]]  # per system: planned, done, ok, errors, missing, ran, ran_errors
    wall_s: float
    started: str
    ended: str

    def total(self, what: str) -> int:
        return sum(c.get(what, 0) for c in self.counts.values())


def _as_config(config: BenchConfig | dict | str | os.PathLike, overrides: Iterable[str] = ()) -> BenchConfig:
    if isinstance(config, BenchConfig):
        if overrides:
            raise ConfigError("overrides apply to a config file or mapping, not to a validated BenchConfig")
        return config
    if isinstance(config, dict):
        return parse_config(config, overrides=overrides)
    return load_config(config, overrides)


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"output directory {out} is not writable: {e.strerror or e}") from None


def run_bench(config: BenchConfig | dict | str | os.PathLike, limit: int | None = None,
              shard: tuple[int, int] = (1, 1), out: str | os.PathLike | None = None, progress: bool = True,
              retry_errors: bool = True, overrides: Iterable[str] = ()) -> RunSummary:
    """Run (or resume) a bench; see the module docstring. `overrides` (``key=value``, as ``--set``) apply
    to a config file or mapping. Raises ConfigError, BenchError, DataError."""
    cfg = _as_config(config, overrides)
    i, n = shard
    if not 1 <= i <= n:
        raise ConfigError(f"shard must be i/n with 1 <= i <= n, got {i}/{n}")
    out = Path(out or cfg.out).resolve()
    _prepare_out(out)
    runner = Runner(cfg, out, (i, n), retry_errors, progress)
    with RunLock(out / layout.lock_name((i, n))):
        return _run(runner, cfg, out, limit)


def _run(runner: Runner, cfg: BenchConfig, out: Path, limit: int | None) -> RunSummary:
    started, t0 = now_iso(), time.perf_counter()
    problems: list[Problem] = []
    dialogues, base = load_dialogues(cfg.dataset, limit, problems)
    for p in problems:
        console.print(f"[yellow]skipped:[/yellow] {p}")
    n_all = len(dialogues)
    dialogues = [d for d in dialogues if runner.shard[1] == 1 or shard_of(d.id, runner.shard[1]) == runner.shard[0]]
    runner.audio_root = ensure_audio(cfg, dialogues, out, base, runner.progress)

    cache = None
    if cfg.cache.enabled:
        cache = Cache(cfg.cache.path, enabled=True)
    wrapper = BackendWrapper(cfg.concurrency.backends, cache)
    systems: dict[tuple[str, int], Any] = {}
    for name, sc in cfg.systems.items():
        for seed in cfg.seeds:
            seeded = sc.model_copy(update={"params": {**sc.params, "seed": seed}})
            try:
                systems[(name, seed)] = build_system(name, seeded, audio_root=runner.audio_root, make=wrapper.make)
            except Exception as e:  # a system that cannot be built is a setup error: stop here
                raise BenchError(f"cannot build system {name!r}: {type(e).__name__}: {e}") from e
    identities = scrub({name: systems[(name, cfg.seeds[0])].identity() for name in cfg.systems})
    spoken = {name: speaks(systems[(name, cfg.seeds[0])]) for name in cfg.systems}

    meta_path = out / layout.run_meta_name(runner.shard)
    meta = _start_meta(meta_path, cfg, runner.shard, identities, spoken, started, limit)
    plan = Plan(shard=list(runner.shard), protocol_hash=cfg.protocol_hash(), systems=list(cfg.systems),
                seeds=cfg.seeds, dialogues_before_sharding=n_all,
                dialogues=[(d.id, [t.index for t in d.user_turns]) for d in dialogues])
    write_json_atomic(out / layout.plan_name(runner.shard), plan.to_json())

    stores = {name: ResultFile(out / layout.RESULTS / layout.results_name(name, runner.shard))
              for name in cfg.systems}
    records: list[dict] = []
    for name, store in stores.items():
        recs, dropped = store.load()
        if dropped:
            console.print(f"[yellow]{store.path.name}: dropped a half-written last record ({dropped} bytes); "
                          "it will be redone[/yellow]")
        records += recs
    finals, attempts = final_records(records), latest_attempts(records)
    runner.finals.update(finals)
    jobs = runner.plan(dialogues, finals)
    pool_sizes = {name: sc.concurrency or (cfg.concurrency.workers if all_remote(sc.backend_specs().items()) else 1)
                  for name, sc in cfg.systems.items()}

    status, error = "finished", None
    try:
        runner.execute(jobs, systems, stores, finals, attempts, pool_sizes)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except StoreWriteError as e:
        status, error = "failed", str(e)
        raise BenchError(str(e)) from None
    except BaseException as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        for store in stores.values():
            try:
                store.close()
            except StoreWriteError as e:
                status, error = "failed", error or str(e)
        summary = _finish(runner, meta, meta_path, dialogues, status, error, started, t0)
        if cache is not None:
            cache.close()
    if error:  # only a close() failure gets here: the data may not be on disk
        raise BenchError(error)
    return summary


def _start_meta(path: Path, cfg: BenchConfig, shard: tuple[int, int], identities: dict, spoken: dict[str, bool],
                started: str, limit: int | None) -> RunMeta:
    """Create run.json, or check that a resumed run matches the one that made the records."""
    meta = RunMeta()
    if path.exists():
        meta = RunMeta.model_validate(json.loads(path.read_text(encoding="utf-8")))
        if meta.protocol_hash != cfg.protocol_hash():
            where = _diff(meta.protocol, cfg.protocol())[:6]
            raise BenchError(f"{path.parent} holds records made with another configuration ({', '.join(where)} "
                             "differ); use another --out directory (or delete this one)")
        if meta.systems != identities:
            where = _diff(meta.systems, identities)[:6]
            raise BenchError(f"{path.parent} holds records made with other backends or prompts ({', '.join(where)} "
                             "differ); use another --out directory (or delete this one)")
        if meta.speaks is not None and meta.speaks != spoken:
            where = _diff(meta.speaks, spoken)[:6]
            raise BenchError(f"{path.parent} holds records of systems that declared other outputs ({', '.join(where)}: "
                             "speaks differs); use another --out directory (or delete this one)")
        for s in meta.sessions:
            if s.status == "running":
                s.status = "killed"  # that process never wrote its end
    meta.spokentod_version, meta.git, meta.protocol_hash = __version__, git_info(), cfg.protocol_hash()
    meta.protocol, meta.config = scrub(cfg.protocol()), scrub(cfg.model_dump(mode="json"))
    meta.shard, meta.systems, meta.host, meta.status = list(shard), identities, host_info(), "running"
    meta.speaks = spoken
    if meta.started is None:
        meta.started = started
    meta.sessions = [*meta.sessions, Session(started=started, ended=None, status="running", limit=limit,
                                             pid=os.getpid())]
    write_json_atomic(path, meta.to_json(exclude_unset=True))
    return meta


def _finish(runner: Runner, meta: RunMeta, path: Path, dialogues: list[Dialogue], status: str,
            error: str | None, started: str, t0: float) -> RunSummary:
    """Count the results (records written before + this session) and close this session in run.json
    (best effort: the disk may be full)."""
    ended, wall = now_iso(), time.perf_counter() - t0
    counts: dict[str, dict[str, int]] = {}
    with runner._count_lock:
        every = dict(runner.finals)
    for name in runner.cfg.systems:
        planned = {(name, d.id, t.index, s) for d in dialogues for t in d.user_turns for s in runner.cfg.seeds}
        finals = {k: r for k, r in every.items() if k in planned}
        c = runner.counts[name]
        counts[name] = {"planned": len(planned), "done": len(finals),
                        "ok": sum(1 for r in finals.values() if not r.get("error")),
                        "errors": sum(1 for r in finals.values() if r.get("error")),
                        "missing": len(planned) - len(finals), "ran": c["ran"], "ran_errors": c["errors"]}
    session = meta.sessions[-1]
    session.ended, session.status, session.wall_s = ended, status, round(wall, 3)
    session.ran = sum(c["ran"] for c in counts.values())
    if error:
        session.error = error
    meta.status, meta.ended, meta.counts = status, ended, counts
    try:
        write_json_atomic(path, meta.to_json(exclude_unset=True))
    except OSError as e:
        console.print(f"[red]could not update {path}: {e.strerror or e}[/red]")
    return RunSummary(runner.out, runner.shard, status, counts, wall, started, ended)
