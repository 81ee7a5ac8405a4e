"""Retries with exponential backoff and full jitter, and `safe_call` for worker threads.

Only causes marked retryable (429, 5xx, timeouts, connection errors) are retried; a 400 or 401 fails at
once because trying again cannot change the answer. Full jitter (sleep a uniform time in
[0, min(cap, base * 2**n)]) spreads out clients that failed together, so they do not retry in lockstep.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from spokentod.errors import BackendError

T = TypeVar("T")


@dataclass
class RetryPolicy:
    max_attempts: int = 3  # total tries, including the first
    base: float = 0.5  # seconds; backoff ceiling for attempt n is min(cap, base * 2**n)
    cap: float = 8.0
    max_retry_after: float = 60.0  # a server asking us to wait longer than this is not waited for in full

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to sleep after failed attempt number `attempt` (1-based)."""
        jitter = (rng or random).uniform(0.0, min(self.cap, self.base * 2 ** (attempt - 1)))
        if retry_after is not None:  # the server knows when it will be ready; never retry sooner
            return max(jitter, min(retry_after, self.max_retry_after))
        return jitter


def retry_call(fn: Callable[[], T], policy: RetryPolicy | None = None,
               sleep: Callable[[float], None] = time.sleep, on_retry: Callable[[BackendError, float], None] | None = None
               ) -> tuple[T, int]:
    """Call `fn` until it succeeds or fails for good; return (value, attempts).

    `fn` signals failure by raising BackendError; its `retryable` flag decides whether to try again. The
    error that escapes carries the number of attempts made.
    """
    policy = policy or RetryPolicy()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(), attempt
        except BackendError as e:
            e.attempts = attempt
            if not e.retryable or attempt >= max(1, policy.max_attempts):
                raise
            wait = policy.delay(attempt, e.retry_after)
            if on_retry:
                on_retry(e, wait)
            sleep(wait)


@dataclass
class Result(Generic[T]):
    """Either a value or the error that prevented it (with its traceback text), never both."""

    value: T | None = None
    error: BaseException | None = None
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]

    def reason(self) -> str | None:
        if self.error is None:
            return None
        if isinstance(self.error, BackendError):
            return str(self.error)
        return f"{type(self.error).__name__}: {self.error}"


def safe_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Result[T]:
    """Run `fn` and return a Result instead of raising, so an error in a worker thread is kept, not lost.

    KeyboardInterrupt and SystemExit still propagate: stopping a run must stay possible.
    """
    try:
        return Result(value=fn(*args, **kwargs))
    except Exception as e:  # noqa: BLE001 - the point is to capture every failure as data
        return Result(error=e, traceback=traceback.format_exc())
