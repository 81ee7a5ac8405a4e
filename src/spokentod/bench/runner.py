"""Turns under the gold-context protocol: the `Runner` plans the work of a run, runs each turn of each
system and records it, concurrently.

For every dialogue, every user turn t, every system and every seed, the system gets
`Context.gold(dialogue, t)` (the gold turns before t) and the gold user turn t (text + audio), and its
reply is stored, never fed back. `history: self` instead feeds the system its own earlier replies (the
mode the reference implementation used, kept for comparison); it forces the turns of a dialogue to run
in order.

Reply audio goes to the name `rundir.layout.reply_audio` gives (a retry never overwrites a file a record
refers to). A run killed after writing a WAV but before its record rewrites that same name on resume,
which is safe because no record refers to it. Audio is written to ``*.partial.wav``, fsynced and renamed,
so a name a record points at always holds a whole file.

Concurrency: one thread pool per system (size `systems.<name>.concurrency`; default `workers` for
systems whose backends are all remote, 1 for in-process models), a global limit of `workers` turns in
flight, and per-backend call limits applied around each backend call (backends/limits.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import soundfile as sf
from rich.console import Console
from rich.progress import ProgressColumn
from rich.text import Text

from spokentod.bench.config import BenchConfig
from spokentod.data.schema import Audio, Dialogue, Speaker, Turn
from spokentod.errors import error_cause
from spokentod.progress import progress_bar
from spokentod.rundir import layout
from spokentod.rundir.records import Key, ResultRecord
from spokentod.rundir.store import ResultFile
from spokentod.systems import speaks
from spokentod.systems.base import Context, SystemReply

console = Console(stderr=True, soft_wrap=True)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class _Job:
    system: str
    seed: int
    dialogue: Dialogue
    turns: list[Turn]  # gold mode: one turn; self mode: the dialogue's user turns in order
    runs: int  # turns this job will actually run (for the progress bar)


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} turns/s" if speed else "– turns/s", style="progress.data.speed")


class Runner:
    def __init__(self, cfg: BenchConfig, out: Path, shard: tuple[int, int], retry_errors: bool, progress: bool):
        self.cfg, self.out, self.shard = cfg, out, shard
        self.retry_errors, self.progress = retry_errors, progress
        self.stop = threading.Event()
        self.slots = threading.BoundedSemaphore(cfg.concurrency.workers)
        self.counts: dict[str, Counter] = {name: Counter() for name in cfg.systems}
        self._count_lock = threading.Lock()
        self.audio_root: Path | None = None
        self.finals: dict[Key, dict[str, Any]] = {}  # the result of every key so far (disk + this session)

    # ------------------------------------------------------------ records

    def run_turn(self, name: str, seed: int, system: Any, d: Dialogue, turn: Turn, ctx: Any, attempt: int,
                 store: ResultFile, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        spoken = speaks(system)
        rel = layout.reply_audio(name, d.id, turn.index, seed, attempt, several_seeds=len(self.cfg.seeds) > 1)
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
                reply = SystemReply(error=f"crash: {type(e).__name__}: {e}", error_reason=f"crash: {error_cause(e)}")
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
        rec = ResultRecord(
            system=name, dialogue_id=d.id, turn=turn.index, seed=seed, attempt=attempt,
            phase=turn.phase.value if turn.phase else None, intent=d.intent.type if d.intent else None,
            history=self.cfg.systems[name].history, context_turns=len(ctx.turns),
            context_chars=sum(len(t.text) for t in ctx.turns), user_text=turn.text,
            user_audio=turn.audio.path if turn.audio else None, text=reply.text,
            user_transcript=reply.user_transcript, audio_path=audio_path, audio_seconds=reply.audio_seconds,
            timings=reply.timings, runner={"wait_s": round(t1 - t0, 6), "respond_s": round(t2 - t1, 6)},
            error=reply.error, error_reason=(reply.error_reason or _stated_reason(reply.error)) if reply.error else None,
            truncated=bool(reply.truncated or ctx.truncated), extra={**reply.extra, **(extra or {})},
            cache=self.cfg.cache.enabled, shard=list(self.shard), started=started, finished=now_iso())
        store.append(rec)  # StoreWriteError stops the run (see execute)
        done = rec.to_json()
        with self._count_lock:
            self.finals[(name, d.id, turn.index, seed)] = done
            self.counts[name]["ran"] += 1
            self.counts[name]["errors" if reply.error else "ok"] += 1
        return done

    # ------------------------------------------------------------ contexts

    def self_context(self, d: Dialogue, t: int, replies: dict[int, dict[str, Any]]) -> tuple[Any, list[int]]:
        """Gold user turns before t, with each user turn's following agent turn(s) replaced by the system's
        own reply to it. A failed reply falls back to the gold agent text (listed in the second value)."""
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


def _stated_reason(error: str) -> str:
    """The countable reason of an error a system stated only as text ("<stage>: <Type>: message", as
    systems/_common.failed writes it): stage and type; "system: <text>" when it has no stage."""
    stage, _, rest = error.partition(": ")
    if not rest:
        stage, rest = "system", error
    return f"{stage}: {rest.split(':', 1)[0].strip()[:60] or 'error'}"
