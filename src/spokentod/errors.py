"""Errors that name where bad input came from: file, record and field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError


class SpokenTODError(Exception):
    """Base class of every error spokentod raises on purpose."""


@dataclass
class Problem:
    """One problem found in input data. `record` is a dialogue id or line number; `field` a dotted path."""

    file: str
    record: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.record is not None:
            where += f" [record {self.record}]"
        if self.field:
            where += f" field '{self.field}'"
        return f"{where}: {self.message}"


class DataError(SpokenTODError, ValueError):
    """Bad input data. Carries one or more Problems, each naming file, record and field."""

    def __init__(self, file: str, record: str | None = None, field: str | None = None,
                 message: str = "invalid data", problems: list[Problem] | None = None):
        self.problems = problems or [Problem(str(file), record, field, message)]
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def many(cls, problems: list[Problem]) -> DataError:
        first = problems[0]
        return cls(first.file, problems=problems)


class BenchError(SpokenTODError):
    """A bench run that cannot start or go on (bad output dir, disk full, incompatible resume...)."""


def field_path(loc: Iterable[Any], skip: tuple[Any, ...] = ()) -> str:
    """A pydantic error location as a dotted path: ("turns", 3, "phase") → "turns.3.phase"."""
    return ".".join(str(x) for x in loc if x not in skip)


def validation_problems(err: ValidationError, file: str, record: str | None = None) -> list[Problem]:
    """A pydantic error as Problems naming the field path of each (e.g. turns.3.phase)."""
    return [Problem(file, record, field_path(e["loc"]) or None, e["msg"]) for e in err.errors()]


def validation_message(err: ValidationError, source: str) -> str:
    """A pydantic error as lines "<source>: field 'a.b': <message>" (configs, recipes, options)."""
    return "\n".join(f"{source}: field '{field_path(e['loc']) or '<top level>'}': {e['msg']}" for e in err.errors())


class AudioError(SpokenTODError, ValueError):
    """Audio that cannot be read or is out of bounds (empty, too long, corrupt)."""


class BackendError(SpokenTODError, RuntimeError):
    """A model backend call that failed, with enough detail to decide what to do next.

    `kind` is asr/llm/tts/audiolm, `backend` the registered name (e.g. "openai"), `reason` names the
    cause in words ("timeout after 5.0 s", "malformed JSON in response: ..."), `status` the HTTP status
    when there was one, `attempts` how many tries were made. `retryable` marks causes worth another
    try (429, 5xx, timeouts, connection errors); `retry_after` is the server's Retry-After in seconds.
    `cause` is the short, countable category a run's status counts errors by: "timeout", "connection",
    "bad response", or None when the reason fits none of them (the status, if any, speaks for itself).
    """

    def __init__(self, kind: str, backend: str, reason: str, status: int | None = None,
                 attempts: int = 1, retryable: bool = False, retry_after: float | None = None,
                 cause: str | None = None):
        self.kind, self.backend, self.reason = kind, backend, reason
        self.status, self.attempts = status, attempts
        self.retryable, self.retry_after, self.cause = retryable, retry_after, cause
        super().__init__(str(self))

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.kind} backend {self.backend!r}: {self.reason}{status}{tries}"

    def __reduce__(self):  # picklable across processes (multiprocessing workers)
        return (type(self), (self.kind, self.backend, self.reason, self.status, self.attempts,
                             self.retryable, self.retry_after, self.cause))

    def as_dict(self) -> dict:
        return {"kind": self.kind, "backend": self.backend, "reason": self.reason,
                "status": self.status, "attempts": self.attempts}


def error_cause(exc: BaseException) -> str:
    """A short, countable cause of a failure: "http NNN", "timeout", "connection", "bad response" from the
    BackendError behind it (the exception itself or one it was raised from), else the exception's type
    name ("TTSFailure", "KeyError")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BackendError):
            if seen.status is not None:
                return f"http {seen.status}"
            return seen.cause or type(exc).__name__
        if isinstance(seen, TimeoutError):
            return "timeout"
        if isinstance(seen, ConnectionError):
            return "connection"
        seen = seen.__cause__
    return type(exc).__name__
