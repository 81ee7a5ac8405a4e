"""Where the DST model's speech features come from: the on-disk cache of a frozen encoder's features (each
utterance encoded once per encoder), or the encoder itself (EncoderFeatures, for a trainable encoder).
Training and tracking both take either as a FeatureSource.

Layout: ``root/<identity-hash>/<sha[:2]>/<sha>.npy`` where identity-hash is the first 16 hex digits of
sha256(json.dumps(encoder.identity(), sort_keys=True)) and sha the sha256 of the audio file's bytes, so
renaming or copying audio keeps its features, changing its bytes (or the encoder, its dtype or the
recipe) misses. ``root`` defaults to ``cache_dir("dst-features")``; ``<identity-hash>/identity.json``
says which encoder made a directory. Files are float32 .npy ([T, dim]), read without pickle; each is
written to a temporary name and renamed (os.replace), so a crash never leaves a half file under the final
name, and two processes filling the same cache at once only waste work. A file that fails to load or has
the wrong shape is recomputed and overwritten.

Size: float32 at 50 frames/s is 200 * dim bytes per second of audio (tiny.en, dim 384: 75 KiB/s, ~4.5 MiB
per minute), so a corpus of 100 h of user speech takes ~27 GB; point SPOKENTOD_CACHE (or ``root``) at a
disk that has room.

Only frozen encoders can be cached: a trainable encoder's features change as it trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from spokentod.atomic import atomic_write, write_json
from spokentod.audio import load_audio
from spokentod.dst.model.encoders import RATE, EncoderError, SpeechEncoder
from spokentod.paths import cache_dir
from spokentod.progress import progress_bar

_FILE_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) → sha256, for this process
_INDEX: tuple[int, Path, sqlite3.Connection] | None = None  # (pid, file, connection): a forked child or a
_INDEX_LOCK = threading.Lock()                                  # moved SPOKENTOD_CACHE opens its own


def _hash_index() -> sqlite3.Connection:
    """The on-disk (path, size, mtime_ns) → sha256 index shared by every process, as git's index keys file
    content: a corpus of 38k WAVs is hashed once, not at every start of training (minutes each time)."""
    global _INDEX
    where = cache_dir("file-hashes") / "index.sqlite"
    if _INDEX is None or _INDEX[:2] != (os.getpid(), where):
        db = sqlite3.connect(where, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")  # a lost row is only re-hashed
        db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT, size INTEGER, mtime_ns INTEGER, "
                   "sha256 TEXT, PRIMARY KEY (path, size, mtime_ns))")
        _INDEX = (os.getpid(), where, db)
    return _INDEX[2]


def _index_get(key: tuple[str, int, int]) -> str | None:
    """The index's hash for `key`; None when it has none or cannot be read (a read-only or network cache):
    the index only saves time, so the file is hashed instead."""
    try:
        with _INDEX_LOCK:
            row = _hash_index().execute("SELECT sha256 FROM hashes WHERE path=? AND size=? AND mtime_ns=?",
                                        key).fetchone()
    except (sqlite3.Error, OSError):
        return None
    return row[0] if row else None


def _index_put(key: tuple[str, int, int], sha: str) -> None:
    try:
        with _INDEX_LOCK:
            _hash_index().execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", (*key, sha))
    except (sqlite3.Error, OSError):
        pass


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, remembered per (resolved path, size, mtime_ns) in this process and in the
    on-disk index, so a file is not re-hashed unless it changed."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key in _FILE_HASHES:
        return _FILE_HASHES[key]
    sha = _index_get(key)
    if sha is None:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        sha = h.hexdigest()
        _index_put(key, sha)
    _FILE_HASHES[key] = sha
    return sha


def identity_hash(encoder: SpeechEncoder) -> str:
    return hashlib.sha256(json.dumps(encoder.identity(), sort_keys=True).encode()).hexdigest()[:16]


class FeatureCache:
    """``get(audio_paths)`` → one [T_i, dim] float32 CPU tensor per path, computing only what is not on disk.

    ``hits`` / ``misses`` count requested items served from the cache / computed by the encoder (a path
    repeated within one call is computed once; its repeats count as hits). ``memory`` keeps that many
    recently used tensors in RAM as well (0 = off). ``progress`` shows a rich bar while encoding many misses.
    """

    def __init__(self, encoder: SpeechEncoder, root: Path | str | None = None, memory: int = 0,
                 progress: bool = True):
        if getattr(encoder, "trainable", False):
            raise EncoderError("FeatureCache needs a frozen encoder (freeze=True): a trainable encoder's "
                               "features change as it trains, so cached ones would go stale")
        self.encoder = encoder
        self.identity = encoder.identity()
        self.key = identity_hash(encoder)
        self.dir = Path(root) / self.key if root is not None else cache_dir("dst-features", self.key)
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "identity.json"
        if not meta.is_file():
            write_json(meta, self.identity, sort_keys=True)
        self.memory, self.progress = int(memory), progress
        self._lru: OrderedDict[str, Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def path_for(self, sha: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.npy"

    def _load(self, sha: str) -> Tensor | None:
        if sha in self._lru:
            self._lru.move_to_end(sha)
            return self._lru[sha]
        path = self.path_for(sha)
        if not path.is_file():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # damaged by something other than us: recompute
            return None
        if arr.ndim != 2 or arr.dtype != np.float32 or arr.shape[1] != self.encoder.dim:
            return None
        return self._remember(sha, torch.from_numpy(arr))

    def _remember(self, sha: str, t: Tensor) -> Tensor:
        if self.memory > 0:
            self._lru[sha] = t
            self._lru.move_to_end(sha)
            while len(self._lru) > self.memory:
                self._lru.popitem(last=False)
        return t

    def _store(self, sha: str, t: Tensor) -> None:
        arr = np.ascontiguousarray(t.numpy(), dtype=np.float32)
        atomic_write(self.path_for(sha), lambda f: np.save(f, arr, allow_pickle=False))
        self._remember(sha, t)

    def get(self, audio_paths: list[str | os.PathLike]) -> list[Tensor]:
        shas = [file_sha256(p) for p in audio_paths]
        found: dict[str, Tensor] = {}
        todo: dict[str, str] = {}  # sha → first path with those bytes
        for path, sha in zip(audio_paths, shas):
            if sha in found or sha in todo:
                continue
            t = self._load(sha)
            if t is None:
                todo[sha] = str(path)
            else:
                found[sha] = t
        self.misses += len(todo)
        self.hits += len(shas) - len(todo)
        if todo:
            found.update(self._compute(todo))
        return [found[s] for s in shas]

    def _compute(self, todo: dict[str, str]) -> dict[str, Tensor]:
        items, out = list(todo.items()), {}
        step = max(1, int(getattr(getattr(self.encoder, "cfg", None), "batch_size", 8)))
        show = self.progress and len(items) > step
        with progress_bar("encoding speech", unit="utterances", transient=True, disable=not show) as bar:
            task = bar.add_task("encode", total=len(items))
            for i in range(0, len(items), step):
                chunk = items[i: i + step]
                waves = [load_audio(path, RATE).samples for _, path in chunk]  # AudioError names the file
                for (sha, _), feats in zip(chunk, self.encoder.encode(waves)):
                    self._store(sha, feats)
                    out[sha] = feats
                bar.advance(task, len(chunk))
        return out

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}


class FeatureSource(Protocol):
    """A FeatureCache, an EncoderFeatures, or anything that maps audio paths to encoder features ([T_i, dim]
    each, no grad)."""

    def get(self, audio_paths: list[str]) -> list[Tensor]: ...


class EncoderFeatures:
    """Features straight from the encoder, for an encoder the on-disk cache refuses (a trainable one)."""

    def __init__(self, encoder: SpeechEncoder):
        self.encoder = encoder

    def get(self, audio_paths: list[str]) -> list[Tensor]:
        return self.encoder.encode([load_audio(p, RATE).samples for p in audio_paths])
