"""Concurrency limits around backend calls, and one shared instance per backend config.

A bench run (and anything else that drives several systems at once) builds every backend through one
`BackendWrapper`: systems with identical backend configs share one instance (one model in memory), each
call holds a slot while it runs (a stream: until consumed or closed), and the backend-call cache sits in
front (a hit needs no slot). Slots: a named limit ("openai": n, or "openai@<base_url>": n for one server)
gives each server its own n slots shared by every system using it; otherwise an in-process model
(`Backend.remote` False) gets one call at a time per instance, and a remote backend is bounded only by
the caller's own workers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from spokentod.backends.base import create, get_class
from spokentod.backends.cache import cached

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
    """The `make` given to build_system: shares one instance per backend identity across systems and
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
            name = getattr(backend, "name", "") or type(backend).__name__
            remote = bool(getattr(backend, "remote", False))
            url = getattr(backend, "base_url", None) if remote else None
            sems: list[threading.Semaphore] = []
            for k in ([f"{name}@{url}"] if url else []) + [name]:
                if k in self.limits:  # one pool of slots per server (url), shared by all systems using it
                    slot = f"{k}|{url}"
                    sems.append(self._named.setdefault(slot, threading.BoundedSemaphore(self.limits[k])))
                    break
            else:
                if not remote:  # an in-process model: one call at a time on this instance
                    sems.append(threading.BoundedSemaphore(1))
            wrapped: Any = Limited(backend, sems) if sems else backend
            if self.cache is not None:
                wrapped = cached(wrapped, self.cache)
            self._made[key] = wrapped
            return wrapped


def all_remote(specs: Iterable[tuple[str, dict[str, Any]]]) -> bool:
    """True when every (kind, config) names a backend class that declares itself remote, so many calls
    may be in flight; False if any is an in-process model (or unknown)."""
    for kind, spec in specs:
        try:
            cls = get_class(kind, spec["name"])
        except KeyError:
            return False
        if not getattr(cls, "remote", False):
            return False
    return True
