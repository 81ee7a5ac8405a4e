"""A content-addressed SQLite cache for backend calls, and `cached(backend, cache)` to put one in front.

Key = sha256 of canonical JSON of (backend identity, operation, inputs, generation params), where audio
(arrays, bytes, files) enters as the sha256 of its content, so the same sound under another file name
still hits and a changed temperature, max_tokens, voice or model misses.

Concurrency: SQLite in WAL mode lets readers run beside one writer. Each thread gets its own connection
(sqlite3 connections must not be shared across threads); other processes wait on busy_timeout, and a
write that still finds the database locked is retried. Writes are INSERT OR IGNORE: two writers that
computed the same key stored the same content, so whichever lands first is right.

Only successful calls are stored. A hit returns the stored result with the original call's timings
(what the model cost, so latency numbers stay meaningful on a resumed run) plus
``timings.extra["cache_hit"] = 1`` and the lookup time in ``extra["cache_lookup_s"]``.
Streaming through the cache: a hit replays the whole text as ONE piece (time to first token is then
the lookup time); a miss streams from the backend and stores the text only if the stream completed.

Opt out per run with ``Cache(enabled=False)`` or the environment variable SPOKENTOD_NO_CACHE=1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from spokentod.backends.base import (
    ASR,
    LLM,
    TTS,
    AudioLM,
    AudioOut,
    AudioReply,
    Completion,
    GenParams,
    Message,
    Timings,
    Transcript,
)
from spokentod.paths import cache_dir

SCHEMA = """CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, op TEXT NOT NULL, backend TEXT NOT NULL,
    value TEXT NOT NULL, audio BLOB, created REAL NOT NULL)"""


# ---------------------------------------------------------------- canonical inputs → key


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def canonical(obj: Any) -> Any:
    """A JSON-ready form in which audio is replaced by the hash of its content."""
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {"__array__": _sha(a.tobytes()), "dtype": str(a.dtype), "shape": list(a.shape)}
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"__bytes__": _sha(bytes(obj))}
    if isinstance(obj, os.PathLike):
        return {"__file__": _sha(Path(obj).read_bytes())}
    if hasattr(obj, "samples") and hasattr(obj, "rate"):  # Waveform, AudioOut
        return {"samples": canonical(np.asarray(obj.samples)), "rate": int(obj.rate)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return canonical(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


def audio_input(audio: Any) -> Any:
    """A str argument to transcribe() is a path: key on the file's bytes, not on its name."""
    if isinstance(audio, str):
        return {"__file__": _sha(Path(audio).read_bytes())}
    return canonical(audio)


def make_key(identity: dict[str, Any], op: str, inputs: Any, params: dict[str, Any] | None = None) -> str:
    doc = {"identity": identity, "op": op, "inputs": canonical(inputs), "params": canonical(params or {})}
    return _sha(json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))


# ---------------------------------------------------------------- the store


def _float_wav(samples: np.ndarray, rate: int) -> bytes:
    # float WAV, not 16-bit: a hit must give back exactly the samples the miss returned
    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.float32), rate, subtype="FLOAT", format="WAV")
    return buf.getvalue()


def _read_wav(blob: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(blob), dtype="float32", always_2d=False)
    return samples, rate


class Cache:
    def __init__(self, path: str | os.PathLike | None = None, enabled: bool = True, busy_timeout: float = 30.0):
        self.enabled = enabled and os.environ.get("SPOKENTOD_NO_CACHE", "") in ("", "0")
        self.path = Path(path) if path else cache_dir("cache") / "backends.sqlite"
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._counts_lock = threading.Lock()
        self._counts = {"hits": 0, "misses": 0, "stores": 0}
        self._by_op: dict[str, dict[str, int]] = {}
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._retry_locked(lambda c: c.execute(SCHEMA))

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, enabled={self.enabled})"

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():  # a connection must never cross a fork
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            self._retry_locked(lambda _: conn.execute("PRAGMA journal_mode=WAL"), conn)
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _retry_locked(self, fn: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection | None = None) -> Any:
        """busy_timeout covers most contention; switching to WAL and schema changes can still report
        'database is locked' at once when another process holds the lock, so try again for a while."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.01
        while True:
            try:
                return fn(conn or self._conn())
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _count(self, op: str, what: str) -> None:
        with self._counts_lock:
            self._counts[what] += 1
            d = self._by_op.setdefault(op, {"hits": 0, "misses": 0, "stores": 0})
            d[what] += 1

    def get(self, key: str, op: str = "?") -> tuple[dict[str, Any], bytes | None] | None:
        if not self.enabled:
            return None
        row = self._retry_locked(lambda c: c.execute("SELECT value, audio FROM entries WHERE key = ?",
                                                     (key,)).fetchone())
        self._count(op, "hits" if row else "misses")
        return (json.loads(row[0]), row[1]) if row else None

    def put(self, key: str, op: str, backend: str, value: dict[str, Any], audio: bytes | None = None) -> None:
        if not self.enabled:
            return
        payload = json.dumps(value, ensure_ascii=False, default=str)
        self._retry_locked(lambda c: c.execute(
            "INSERT OR IGNORE INTO entries (key, op, backend, value, audio, created) VALUES (?, ?, ?, ?, ?, ?)",
            (key, op, backend, payload, audio, time.time())))
        self._count(op, "stores")

    def stats(self) -> dict[str, Any]:
        with self._counts_lock:
            out: dict[str, Any] = {**self._counts, "by_op": {k: dict(v) for k, v in self._by_op.items()}}
        looked = out["hits"] + out["misses"]
        out.update(enabled=self.enabled, path=str(self.path), hit_rate=out["hits"] / looked if looked else 0.0)
        if self.enabled:
            out["entries"] = self._retry_locked(lambda c: c.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        return out

    def clear(self) -> None:
        if self.enabled:
            self._retry_locked(lambda c: c.execute("DELETE FROM entries"))

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's objects are collected)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# ---------------------------------------------------------------- wrappers (same protocol, by composition)


def _timings_dict(t: Timings) -> dict[str, Any]:
    return dataclasses.asdict(t)


def _hit_timings(d: dict[str, Any], lookup: float) -> Timings:
    t = Timings(**d)
    t.extra = {**t.extra, "cache_hit": 1.0, "cache_lookup_s": lookup}
    return t


class _Cached:
    """Delegates everything it does not cache to the wrapped backend (identity, attributes, close...)."""

    def __init__(self, backend: Any, cache: Cache):
        self.backend, self.cache = backend, cache
        self.kind = getattr(backend, "kind", "")
        self.name = getattr(backend, "name", type(backend).__name__)
        ident = backend.identity() if hasattr(backend, "identity") else {"class": type(backend).__qualname__}
        self._identity = ident

    def __getattr__(self, attr: str) -> Any:
        if attr == "backend":  # not set yet (e.g. while unpickling): no endless recursion
            raise AttributeError(attr)
        return getattr(self.backend, attr)

    def __repr__(self) -> str:
        return f"cached({self.backend!r})"

    def identity(self) -> dict[str, Any]:
        return self._identity

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self._identity, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _lookup(self, op: str, inputs: Any, params: dict[str, Any] | None = None):
        """Return (key, stored value, audio blob, lookup seconds); value is None on a miss."""
        t0 = time.perf_counter()
        if not self.cache.enabled:
            return None, None, None, 0.0
        key = make_key(self._identity, op, inputs, params)
        got = self.cache.get(key, op)
        value, blob = got if got else (None, None)
        return key, value, blob, time.perf_counter() - t0

    def _store(self, key: str | None, op: str, value: dict[str, Any], audio: bytes | None = None) -> None:
        if key is not None:
            self.cache.put(key, op, self.name, value, audio)


class CachedASR(_Cached):
    def transcribe(self, audio: Any, language: str | None = None, **kw: Any) -> Transcript:
        inputs = {"audio": audio_input(audio), "language": language, **kw}
        key, v, _, lookup = self._lookup("asr.transcribe", inputs)
        if v is not None:
            return Transcript(v["text"], _hit_timings(v["timings"], lookup), v.get("language"), v.get("segments", []))
        out = self.backend.transcribe(audio, language=language, **kw)
        self._store(key, "asr.transcribe", {"text": out.text, "language": out.language, "segments": out.segments,
                                            "timings": _timings_dict(out.timings)})
        return out


class CachedLLM(_Cached):
    def chat(self, messages: list[Message], params: GenParams | None = None) -> Completion:
        p = params or GenParams()  # None and the defaults are the same request
        key, v, _, lookup = self._lookup("llm.chat", messages, p.as_dict())
        if v is not None:
            return Completion(v["text"], v.get("ttft"), v.get("tokens", 0), _hit_timings(v["timings"], lookup),
                              v.get("finish_reason"))
        out = self.backend.chat(messages, params)
        self._store(key, "llm.chat", {"text": out.text, "ttft": out.ttft, "tokens": out.tokens,
                                      "finish_reason": out.finish_reason, "timings": _timings_dict(out.timings)})
        return out

    def stream(self, messages: list[Message], params: GenParams | None = None) -> Iterator[str]:
        # Same key as chat(): greedy streamed text equals chat text, so either call can serve the other.
        p = params or GenParams()
        key, v, _, _ = self._lookup("llm.chat", messages, p.as_dict())
        if v is not None:
            yield v["text"]
            return
        t0, first, pieces = time.perf_counter(), None, []
        for piece in self.backend.stream(messages, params):  # an exception here leaves nothing stored
            if first is None:
                first = time.perf_counter() - t0
            pieces.append(piece)
            yield piece
        wall = time.perf_counter() - t0
        self._store(key, "llm.chat", {"text": "".join(pieces), "ttft": first, "tokens": len(pieces),
                                      "finish_reason": None,
                                      "timings": _timings_dict(Timings(wall=wall, first=first,
                                                                       extra={"tokens_estimated": 1.0}))})


class CachedTTS(_Cached):
    def synthesize(self, text: str, voice: str | None = None) -> AudioOut:
        key, v, blob, lookup = self._lookup("tts.synthesize", {"text": text, "voice": voice})
        if v is not None and blob is not None:
            samples, rate = _read_wav(blob)
            return AudioOut(samples, rate, _hit_timings(v["timings"], lookup))
        out = self.backend.synthesize(text, voice)
        self._store(key, "tts.synthesize", {"timings": _timings_dict(out.timings)},
                    _float_wav(out.samples, out.rate))
        return out


class CachedAudioLM(_Cached):
    def respond(self, messages: list[Message], params: GenParams | None = None) -> AudioReply:
        p = params or GenParams()
        key, v, blob, lookup = self._lookup("audiolm.respond", messages, p.as_dict())
        if v is not None:
            audio = None
            if blob is not None:
                samples, rate = _read_wav(blob)
                audio = AudioOut(samples, rate, _hit_timings(v["audio_timings"], lookup))
            return AudioReply(v["text"], audio, _hit_timings(v["timings"], lookup))
        out = self.backend.respond(messages, params)
        value = {"text": out.text, "timings": _timings_dict(out.timings),
                 "audio_timings": _timings_dict(out.audio.timings) if out.audio else None}
        self._store(key, "audiolm.respond", value, _float_wav(out.audio.samples, out.audio.rate) if out.audio else None)
        return out


def cached(backend: Any, cache: Cache | None = None) -> Any:
    """Wrap a backend so identical calls are served from `cache`; the wrapper has the same protocol."""
    cache = cache or Cache()
    for proto, cls in ((ASR, CachedASR), (LLM, CachedLLM), (TTS, CachedTTS), (AudioLM, CachedAudioLM)):
        if isinstance(backend, proto):
            return cls(backend, cache)
    raise TypeError(f"{type(backend).__name__} implements none of the ASR, LLM, TTS, AudioLM protocols")
