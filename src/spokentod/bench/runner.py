"""Run systems turn by turn under the gold-context protocol: resumable, concurrent, sharded.

For every dialogue, every user turn t, every system and every seed, the system gets
`Context.gold(dialogue, t)` (the gold turns before t) and the gold user turn t (text + audio), and its
reply is stored, never fed back. `history: self` instead feeds the system its own earlier replies (the
seed code's mode, kept for comparison); it forces the turns of a dialogue to run in order.

Output directory:
    run.json                     metadata: config, versions, git commit, backend identities + prompt hashes,
                                 host, sessions (start/end/status), counts. No secrets.
    plan.json                    the work: systems, seeds, dialogue ids and their user turns (for status/merge)
    results/<system>.jsonl       one record per (dialogue, user turn, seed) attempt (see store.py)
    audio_in/                    user (and agent) turn audio rendered by synthesize_manifest, once
    audio_out/<system>/<dialogue>/<turn:03d>.wav   reply audio
A shard i of n names its files run.shard-i-of-n.json, plan.shard-i-of-n.json, <system>.shard-i-of-n.jsonl.

Reply audio names: attempt 1 of a turn writes ``<turn:03d>.wav`` (``<turn:03d>.s<seed>.wav`` when the
config has several seeds); a retry after a failed attempt writes ``<turn:03d>.a<k>.wav``, so a file a
record refers to is never overwritten. A run killed after writing a WAV but before its record rewrites
that same name on resume, which is safe because no record refers to it. Audio is written to
``*.partial.wav``, fsynced and renamed, so a name a record points at always holds a whole file.

Resume: records already there are kept; turns whose last record is an error are redone (a new attempt)
unless retry_errors=False. In `history: self` mode a redone turn also redoes the later turns of its
dialogue, whose context depended on it. Resuming with a different protocol (dataset, sample, systems,
params, prompts, backend identities) is refused: records made under two protocols must not mix.

Concurrency: one thread pool per system (size `systems.<name>.concurrency`; default `workers` for
systems whose backends are all HTTP, 1 for in-process models), a global limit of `workers` turns in
flight, and per-backend call limits applied around each backend call (see config.Concurrency).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import ProgressColumn
from rich.text import Text

from spokentod.bench.config import BenchConfig, ConfigError, load_config, parse_config
from spokentod.bench.store import (
    Key,
    ResultFile,
    StoreWriteError,
    final_records,
    latest_attempts,
    results_name,
    write_json_atomic,
)
from spokentod.data.schema import Audio, Dialogue, Speaker, Turn
from spokentod.errors import SpokenTODError
from spokentod.progress import progress_bar

console = Console(stderr=True, soft_wrap=True)


class BenchError(SpokenTODError):
    """A run that cannot start or go on (bad output dir, disk full, incompatible resume...)."""


# ---------------------------------------------------------------- small helpers


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def shard_of(dialogue_id: str, n: int) -> int:
    """1-based shard of a dialogue: a stable hash, so every machine agrees without talking."""
    return int(hashlib.sha256(dialogue_id.encode("utf-8")).hexdigest()[:16], 16) % n + 1


def shard_suffix(shard: tuple[int, int]) -> str:
    return "" if shard[1] == 1 else f".shard-{shard[0]}-of-{shard[1]}"


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise ValueError(f"shard must look like i/n with 1 <= i <= n (e.g. 2/4), got {text!r}")
    return int(m[1]), int(m[2])


_SECRET_PARTS = {"key", "apikey", "token", "secret", "password", "passwd", "authorization", "auth", "credentials"}


def _secret_name(name: str) -> bool:
    # Split on separators and camelCase: api_key_env, X-Api-Key, apiKey → secret; max_tokens → not.
    parts = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower())
    return any(p in _SECRET_PARTS for p in parts)


def _secret_env_values() -> list[str]:
    return sorted({v for k, v in os.environ.items() if _secret_name(k) and len(v) >= 6}, key=len, reverse=True)


def scrub(obj: Any, _values: list[str] | None = None) -> Any:
    """Drop anything that may be a credential: values of keys named like key/token/secret/password, and
    any occurrence of such an environment variable's value inside a string."""
    values = _secret_env_values() if _values is None else _values
    if isinstance(obj, dict):
        return {k: "<redacted>" if _secret_name(k) else scrub(v, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, values) for v in obj]
    if isinstance(obj, str):
        for v in values:
            obj = obj.replace(v, "<redacted>")
    return obj


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.cache  # once per process: it cannot change under a running bench
def git_info() -> dict[str, Any] | None:
    """Commit of the spokentod checkout this code runs from, if it is one."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


@functools.cache
def host_info() -> dict[str, Any]:
    return {"hostname": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch": _pkg_version("torch")}


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [path or "<root>"]


# ---------------------------------------------------------------- backend limits


_CALLS = ("transcribe", "chat", "stream", "stream_chat", "synthesize", "respond")


class Limited:
    """A backend whose calls hold semaphores while they run (streams: until fully consumed or closed).

    Only the call methods the backend has are defined, so protocol checks (and `cached`) see the same
    kind of backend; everything else is delegated.
    """

    def __init__(self, backend: Any, sems: list[threading.Semaphore]):
        self.backend, self._sems = backend, sems
        for m in _CALLS:
            fn = getattr(backend, m, None)
            if callable(fn):
                setattr(self, m, self._gen(fn) if m == "stream" else self._call(fn))

    def __getattr__(self, attr: str) -> Any:
        if attr == "backend":
            raise AttributeError(attr)
        return getattr(self.backend, attr)

    def _acquire(self) -> None:
        for s in self._sems:  # always the same order (shared named limit first): no lock-order deadlock
            s.acquire()

    def _release(self) -> None:
        for s in reversed(self._sems):
            s.release()

    def _call(self, fn: Callable) -> Callable:
        def call(*a: Any, **kw: Any) -> Any:
            self._acquire()
            try:
                return fn(*a, **kw)
            finally:
                self._release()
        return call

    def _gen(self, fn: Callable) -> Callable:
        def stream(*a: Any, **kw: Any):
            self._acquire()
            try:
                yield from fn(*a, **kw)
            finally:
                self._release()
        return stream


class BackendWrapper:
    """The `wrap` given to build_system: shares one instance per backend identity across systems and
    seeds (one model in memory), applies call limits, and puts the cache in front (hits need no slot)."""

    def __init__(self, limits: dict[str, int], cache: Any = None):
        self.limits, self.cache = limits, cache
        self._named: dict[str, threading.Semaphore] = {}
        self._made: dict[str, Any] = {}
        self._by_cfg: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._make_lock = threading.Lock()

    def make(self, kind: str, cfg: dict[str, Any]) -> Any:
        """Create (once per identical config) and wrap: two systems sharing a model config load it once."""
        from spokentod.backends.base import create

        key = json.dumps([kind, cfg], sort_keys=True, default=str)
        with self._make_lock:
            if key not in self._by_cfg:
                self._by_cfg[key] = self(kind, create(kind, cfg))
            return self._by_cfg[key]

    def __call__(self, kind: str, backend: Any) -> Any:
        ident = getattr(backend, "identity", None)
        key = json.dumps([kind, ident() if callable(ident) else repr(backend)], sort_keys=True, default=str)
        with self._lock:
            if key in self._made:
                return self._made[key]
            name, url = getattr(backend, "name", "") or type(backend).__name__, getattr(backend, "base_url", None)
            sems: list[threading.Semaphore] = []
            for k in ([f"{name}@{url}"] if url else []) + [name]:
                if k in self.limits:  # one pool of slots per server (url), shared by all systems using it
                    slot = f"{k}|{url}"
                    sems.append(self._named.setdefault(slot, threading.BoundedSemaphore(self.limits[k])))
                    break
            else:
                if url is None:  # an in-process model: one call at a time on this instance
                    sems.append(threading.BoundedSemaphore(1))
            wrapped: Any = Limited(backend, sems) if sems else backend
            if self.cache is not None:
                from spokentod.backends.cache import cached

                wrapped = cached(wrapped, self.cache)
            self._made[key] = wrapped
            return wrapped

    @staticmethod
    def all_http(system_cfg: Any) -> bool:
        """True when every backend the system config names talks HTTP (takes a base_url), so many calls
        may be in flight; False if any is an in-process model (or unknown)."""
        import inspect

        from spokentod.backends.base import get_class

        for kind in ("asr", "llm", "tts", "audiolm"):
            section = getattr(system_cfg, kind, None)
            if section is None:
                continue
            try:
                params = inspect.signature(get_class(kind, section["name"]).__init__).parameters
            except (KeyError, TypeError, ValueError):
                return False
            if "base_url" not in params:
                return False
        return True


# ---------------------------------------------------------------- data and audio


def load_dialogues(cfg: BenchConfig, limit: int | None = None) -> tuple[list[Dialogue], Path | None]:
    """The dialogues to run (corpus or manifest, sampled, limited) and the folder their audio paths are
    relative to (a manifest's folder), if any."""
    from spokentod.data import corpora
    from spokentod.data.manifest import read_manifest
    from spokentod.data.sample import stratified_sample

    ds = cfg.dataset
    problems: list = []
    if ds.manifest:
        dialogues = list(read_manifest(ds.manifest, lenient=ds.lenient, problems=problems))
        base: Path | None = Path(ds.manifest).resolve().parent
    else:
        dialogues = corpora.load(ds.corpus, ds.path, lenient=ds.lenient, problems=problems)
        base = None
    for p in problems:
        console.print(f"[yellow]skipped:[/yellow] {p}")
    if ds.sample:
        dialogues = stratified_sample(dialogues, ds.sample.n, ds.sample.stratify, ds.sample.seed)
    n = limit or ds.limit
    if n:
        dialogues = dialogues[:n]
    dup = [i for i, c in Counter(d.id for d in dialogues).items() if c > 1]
    if dup:
        raise BenchError(f"dialogue ids are not unique ({dup[:5]}): records could not be told apart")
    return dialogues, base


def ensure_audio(cfg: BenchConfig, dialogues: list[Dialogue], out: Path, base: Path | None,
                 progress: bool = True) -> Path | None:
    """Make sure the turns the systems hear have audio; render them once into <out>/audio_in if not.
    Returns the folder turn audio paths are relative to (what systems get as audio_root)."""
    user = any(s.wants_audio for s in cfg.systems.values())
    agent = any(s.wants_agent_audio for s in cfg.systems.values())
    if not (user or agent):
        return base
    speakers = cfg.audio.speakers if cfg.audio.speakers != "auto" else ("all" if agent else "user")
    wanted = (Speaker.user, Speaker.agent) if speakers == "all" else (Speaker.user,)
    if base is not None and all(t.audio for d in dialogues for t in d.turns if t.speaker in wanted):
        return base
    from spokentod.data.manifest import read_manifest
    from spokentod.data.synth import SynthError, synthesize_manifest

    tts = dict(cfg.audio.tts)
    name = tts.pop("name")
    audio_dir = out / "audio_in"
    try:
        manifest = synthesize_manifest(dialogues, audio_dir, tts=name, voices=cfg.audio.voices, speakers=speakers,
                                       rate=cfg.audio.rate, tts_config=tts, progress=progress)
    except SynthError as e:
        if e.path is None:
            raise BenchError(str(e)) from None
        console.print(f"[yellow]warning:[/yellow] {e} (their turns will be recorded as errors)")
        manifest = e.path
    rendered = {d.id: d for d in read_manifest(manifest)}
    for d in dialogues:
        for t, r in zip(d.turns, rendered[d.id].turns):
            t.audio = r.audio
    return audio_dir.resolve()


# ---------------------------------------------------------------- the run


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


@dataclass
class _Job:
    system: str
    seed: int
    dialogue: Dialogue
    turns: list[Turn]  # gold mode: one turn; self mode: the dialogue's user turns in order
    runs: int  # turns this job will actually run (for the progress bar)


def _as_config(config: BenchConfig | dict | str | os.PathLike) -> BenchConfig:
    if isinstance(config, BenchConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(config)


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"output directory {out} is not writable: {e.strerror or e}") from None


class _Lock:
    """One writer per output dir and shard: a second `bench run` on it would duplicate records."""

    def __init__(self, path: Path):
        self.path, self.fd = path, -1

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise BenchError(f"another `bench run` is writing to {self.path.parent} (lock {self.path.name})") from None
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # the kernel drops the lock; a kill -9 drops it too


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} turns/s" if speed else "– turns/s", style="progress.data.speed")


class Runner:
    def __init__(self, cfg: BenchConfig, out: Path, shard: tuple[int, int], retry_errors: bool, progress: bool):
        self.cfg, self.out, self.shard = cfg, out, shard
        self.retry_errors, self.progress = retry_errors, progress
        self.suffix = shard_suffix(shard)
        self.stop = threading.Event()
        self.slots = threading.BoundedSemaphore(cfg.concurrency.workers)
        self.counts: dict[str, Counter] = {name: Counter() for name in cfg.systems}
        self._count_lock = threading.Lock()
        self.audio_root: Path | None = None
        self.finals: dict[Key, dict[str, Any]] = {}  # the result of every key so far (disk + this session)

    # ------------------------------------------------------------ records

    def audio_rel(self, system: str, dialogue_id: str, turn: int, seed: int, attempt: int) -> Path:
        from spokentod.data.synth import safe_name

        name = f"{turn:03d}"
        if len(self.cfg.seeds) > 1:
            name += f".s{seed}"
        if attempt > 1:
            name += f".a{attempt}"
        return Path("audio_out") / system / safe_name(dialogue_id) / f"{name}.wav"

    def run_turn(self, name: str, seed: int, system: Any, d: Dialogue, turn: Turn, ctx: Any, attempt: int,
                 store: ResultFile, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        from spokentod.systems.base import SystemReply

        spoken = self.cfg.systems[name].type != "text"
        rel = self.audio_rel(name, d.id, turn.index, seed, attempt)
        final = self.out / rel
        tmp = final.with_name(final.stem + ".partial.wav")
        if spoken:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
        started, t0 = now_iso(), time.perf_counter()
        with self.slots:
            t1 = time.perf_counter()
            try:
                reply = system.respond(ctx, turn, tmp if spoken else None)
            except Exception as e:  # noqa: BLE001 - the protocol says never raise; a plug-in might anyway
                reply = SystemReply(error=f"crash: {type(e).__name__}: {e}")
            t2 = time.perf_counter()
        audio_path = None
        if spoken and tmp.exists():
            with tmp.open("rb+") as f:  # durable before a record points at it
                os.fsync(f.fileno())
            os.replace(tmp, final)
            audio_path = rel.as_posix()
        elif reply.audio_path and Path(reply.audio_path) != tmp:  # a system that chose its own file
            p = Path(reply.audio_path)
            audio_path = p.relative_to(self.out).as_posix() if p.is_relative_to(self.out) else str(p)
        rec = {"system": name, "dialogue_id": d.id, "turn": turn.index, "seed": seed, "attempt": attempt,
               "phase": turn.phase.value if turn.phase else None, "intent": d.intent.type if d.intent else None,
               "history": self.cfg.systems[name].history, "context_turns": len(ctx.turns),
               "context_chars": sum(len(t.text) for t in ctx.turns), "user_text": turn.text,
               "user_audio": turn.audio.path if turn.audio else None, "text": reply.text,
               "user_transcript": reply.user_transcript, "audio_path": audio_path,
               "audio_seconds": reply.audio_seconds, "timings": reply.timings,
               "runner": {"wait_s": round(t1 - t0, 6), "respond_s": round(t2 - t1, 6)},
               "error": reply.error, "error_reason": error_reason(reply.error) if reply.error else None,
               "truncated": bool(reply.truncated or ctx.truncated), "extra": {**reply.extra, **(extra or {})},
               "cache": self.cfg.cache.enabled, "shard": list(self.shard), "started": started, "finished": now_iso()}
        store.append(rec)  # StoreWriteError stops the run (see execute)
        with self._count_lock:
            self.finals[(name, d.id, turn.index, seed)] = rec
            self.counts[name]["ran"] += 1
            self.counts[name]["errors" if reply.error else "ok"] += 1
        return rec

    # ------------------------------------------------------------ contexts

    def self_context(self, d: Dialogue, t: int, replies: dict[int, dict[str, Any]]) -> tuple[Any, list[int]]:
        """Gold user turns before t, with each user turn's following agent turn(s) replaced by the system's
        own reply to it. A failed reply falls back to the gold agent text (listed in the second value)."""
        from spokentod.systems.base import Context

        turns: list[Turn] = []
        fallback: list[int] = []
        last_user: int | None = None
        for turn in d.turns[:t]:
            if turn.speaker == Speaker.user:
                last_user = turn.index
                turns.append(turn)
                continue
            rec = replies.get(last_user) if last_user is not None else None
            if rec is None or rec.get("error"):
                if last_user is not None:
                    fallback.append(turn.index)
                turns.append(turn)
            elif not (turns and turns[-1].metadata.get("own_reply_to") == last_user):  # one reply per user turn
                turns.append(Turn(index=turn.index, speaker=Speaker.agent, text=rec.get("text") or "",
                                  phase=turn.phase, audio=self._own_audio(rec),
                                  metadata={"own_reply_to": last_user}))
        return Context(d.id, turns, d.intent), fallback

    def _own_audio(self, rec: dict[str, Any]) -> Audio | None:
        if not rec.get("audio_path"):
            return None
        path = (self.out / rec["audio_path"]).resolve()
        try:
            import soundfile as sf

            info = sf.info(str(path))
        except Exception:  # noqa: BLE001 - unreadable: the history simply has no audio for it
            return None
        return Audio(path=str(path), sample_rate=info.samplerate, duration=info.frames / info.samplerate)

    # ------------------------------------------------------------ planning and execution

    def plan(self, dialogues: list[Dialogue], finals: dict[Key, dict]) -> list[_Job]:
        def done(key: Key) -> bool:
            r = finals.get(key)
            return r is not None and not (self.retry_errors and r.get("error"))

        jobs = []
        for d in dialogues:
            for name, sc in self.cfg.systems.items():
                for seed in self.cfg.seeds:
                    users = d.user_turns
                    if sc.history == "gold":
                        jobs += [_Job(name, seed, d, [t], 1) for t in users if not done((name, d.id, t.index, seed))]
                        continue
                    runs, redo = 0, False  # self: a redone turn redoes the later ones (their context changed)
                    for t in users:
                        if redo or not done((name, d.id, t.index, seed)):
                            runs, redo = runs + 1, True
                    if runs:
                        jobs.append(_Job(name, seed, d, users, runs))
        return jobs

    def run_job(self, job: _Job, system: Any, store: ResultFile, finals: dict[Key, dict],
                attempts: dict[Key, int], advance: Callable[[], None]) -> None:
        from spokentod.systems.base import Context

        sc = self.cfg.systems[job.system]
        replies: dict[int, dict[str, Any]] = {}
        redo = False
        for turn in job.turns:
            key = (job.system, job.dialogue.id, turn.index, job.seed)
            prev = finals.get(key)
            if not redo and prev is not None and not (self.retry_errors and prev.get("error")):
                replies[turn.index] = prev
                continue
            if self.stop.is_set():
                return
            extra = None
            if sc.history == "self":
                ctx, fallback = self.self_context(job.dialogue, turn.index, replies)
                extra = {"self_fallback_turns": fallback} if fallback else None
                redo = True
            else:
                ctx = Context.gold(job.dialogue, turn.index)
            replies[turn.index] = self.run_turn(job.system, job.seed, system, job.dialogue, turn, ctx,
                                                attempts.get(key, 0) + 1, store, extra)
            advance()

    def execute(self, jobs: list[_Job], systems: dict[tuple[str, int], Any], stores: dict[str, ResultFile],
                finals: dict[Key, dict], attempts: dict[Key, int], pool_sizes: dict[str, int]) -> None:
        total = sum(j.runs for j in jobs)
        pools = {name: ThreadPoolExecutor(max_workers=pool_sizes[name], thread_name_prefix=f"bench-{name}")
                 for name in self.cfg.systems}
        with progress_bar(extra=(_Rate(),), console=console, disable=not self.progress,
                          speed_estimate_period=60) as bar:
            task = bar.add_task("bench", total=total)

            def advance() -> None:
                with self._count_lock:
                    errors = sum(c["errors"] for c in self.counts.values())
                bar.update(task, advance=1, description=f"bench ({errors} errors)" if errors else "bench")

            futures: list[Future] = [pools[j.system].submit(self.run_job, j, systems[(j.system, j.seed)],
                                                            stores[j.system], finals, attempts, advance)
                                     for j in jobs]
            try:
                for f in as_completed(futures):
                    f.result()  # systems' failures are records; what escapes is a write error or a bug
            except BaseException:
                self.stop.set()  # running turns finish and write their record; queued ones never start
                for f in futures:
                    f.cancel()
                wait(futures)
                raise
            finally:
                for p in pools.values():
                    p.shutdown(wait=True, cancel_futures=True)


def error_reason(error: str) -> str:
    """A short, countable cause for `status`: '<stage>: timeout|connection|http NNN|bad response|<Exception>'."""
    stage, _, rest = error.partition(": ")
    if not rest:
        stage, rest = "system", error
    low = rest.lower()
    if m := re.search(r"\(http (\d{3})\)", low):
        cause = f"http {m[1]}"
    elif "timeout" in low or "timed out" in low:
        cause = "timeout"
    elif "cannot connect" in low or "connection" in low:
        cause = "connection"
    elif any(w in low for w in ("malformed", "utf-8", "unexpected json", "has no choices", "bad response")):
        cause = "bad response"
    else:
        cause = rest.split(":", 1)[0].strip()[:60] or "error"
    return f"{stage}: {cause}"


def run_bench(config: BenchConfig | dict | str | os.PathLike, limit: int | None = None,
              shard: tuple[int, int] = (1, 1), out: str | os.PathLike | None = None, progress: bool = True,
              retry_errors: bool = True) -> RunSummary:
    """Run (or resume) a bench; see the module docstring. Raises ConfigError, BenchError, DataError."""
    cfg = _as_config(config)
    i, n = shard
    if not 1 <= i <= n:
        raise ConfigError(f"shard must be i/n with 1 <= i <= n, got {i}/{n}")
    out = Path(out or cfg.out).resolve()
    _prepare_out(out)
    runner = Runner(cfg, out, (i, n), retry_errors, progress)
    with _Lock(out / f".run{runner.suffix}.lock"):
        return _run(runner, cfg, out, limit)


def _run(runner: Runner, cfg: BenchConfig, out: Path, limit: int | None) -> RunSummary:
    from spokentod.systems import build_system

    started, t0 = now_iso(), time.perf_counter()
    dialogues, base = load_dialogues(cfg, limit)
    n_all = len(dialogues)
    dialogues = [d for d in dialogues if runner.shard[1] == 1 or shard_of(d.id, runner.shard[1]) == runner.shard[0]]
    runner.audio_root = ensure_audio(cfg, dialogues, out, base, runner.progress)

    cache = None
    if cfg.cache.enabled:
        from spokentod.backends.cache import Cache

        cache = Cache(cfg.cache.path, enabled=True)
    wrapper = BackendWrapper(cfg.concurrency.backends, cache)
    systems: dict[tuple[str, int], Any] = {}
    for name, sc in cfg.systems.items():
        for seed in cfg.seeds:
            spec = sc.build_dict()
            spec["params"] = {**spec.get("params", {}), "seed": seed}
            try:
                systems[(name, seed)] = build_system(name, spec, audio_root=runner.audio_root, make=wrapper.make)
            except Exception as e:  # a system that cannot be built is a setup error: stop here
                raise BenchError(f"cannot build system {name!r}: {type(e).__name__}: {e}") from e
    identities = scrub({name: systems[(name, cfg.seeds[0])].identity() for name in cfg.systems})

    meta_path = out / f"run{runner.suffix}.json"
    meta = _start_meta(meta_path, cfg, runner.shard, identities, started, limit)
    plan = {"shard": list(runner.shard), "protocol_hash": cfg.protocol_hash(), "systems": list(cfg.systems),
            "seeds": cfg.seeds, "dialogues_before_sharding": n_all,
            "dialogues": [[d.id, [t.index for t in d.user_turns]] for d in dialogues]}
    write_json_atomic(out / f"plan{runner.suffix}.json", plan)

    stores = {name: ResultFile(out / "results" / results_name(name, runner.shard)) for name in cfg.systems}
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
    pool_sizes = {name: sc.concurrency or (cfg.concurrency.workers if wrapper.all_http(sc) else 1)
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


def _start_meta(path: Path, cfg: BenchConfig, shard: tuple[int, int], identities: dict, started: str,
                limit: int | None) -> dict[str, Any]:
    """Create run.json, or check that a resumed run matches the one that made the records."""
    from spokentod import __version__

    meta: dict[str, Any] = {}
    if path.exists():
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("protocol_hash") != cfg.protocol_hash():
            where = _diff(meta.get("protocol"), cfg.protocol())[:6]
            raise BenchError(f"{path.parent} holds records made with another configuration ({', '.join(where)} "
                             "differ); use another --out directory (or delete this one)")
        if meta.get("systems") != identities:
            where = _diff(meta.get("systems"), identities)[:6]
            raise BenchError(f"{path.parent} holds records made with other backends or prompts ({', '.join(where)} "
                             "differ); use another --out directory (or delete this one)")
        for s in meta.get("sessions", []):
            if s.get("status") == "running":
                s["status"] = "killed"  # that process never wrote its end
    meta.update({"spokentod_version": __version__, "git": git_info(), "protocol_hash": cfg.protocol_hash(),
                 "protocol": scrub(cfg.protocol()), "config": scrub(cfg.model_dump(mode="json")),
                 "shard": list(shard), "systems": identities, "host": host_info(), "status": "running"})
    meta.setdefault("started", started)
    meta.setdefault("sessions", []).append({"started": started, "ended": None, "status": "running",
                                            "limit": limit, "pid": os.getpid()})
    write_json_atomic(path, meta)
    return meta


def _finish(runner: Runner, meta: dict, path: Path, dialogues: list[Dialogue], status: str,
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
    session = meta["sessions"][-1]
    session.update(ended=ended, status=status, wall_s=round(wall, 3),
                   ran=sum(c["ran"] for c in counts.values()), **({"error": error} if error else {}))
    meta.update(status=status, ended=ended, counts=counts)
    try:
        write_json_atomic(path, meta)
    except OSError as e:
        console.print(f"[red]could not update {path}: {e.strerror or e}[/red]")
    return RunSummary(runner.out, runner.shard, status, counts, wall, started, ended)
