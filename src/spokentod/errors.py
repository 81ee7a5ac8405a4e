"""Errors that name where bad input came from: file, record and field."""

from __future__ import annotations

from dataclasses import dataclass


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
    def many(cls, problems: list[Problem]) -> "DataError":
        first = problems[0]
        return cls(first.file, problems=problems)


class AudioError(SpokenTODError, ValueError):
    """Audio that cannot be read or is out of bounds (empty, too long, corrupt)."""


class BackendError(SpokenTODError, RuntimeError):
    """A model backend call that failed, with enough detail to decide what to do next.

    `kind` is asr/llm/tts/audiolm, `backend` the registered name (e.g. "openai"), `reason` names the
    cause in words ("timeout after 5.0 s", "malformed JSON in response: ..."), `status` the HTTP status
    when there was one, `attempts` how many tries were made. `retryable` marks causes worth another
    try (429, 5xx, timeouts, connection errors); `retry_after` is the server's Retry-After in seconds.
    """

    def __init__(self, kind: str, backend: str, reason: str, status: int | None = None,
                 attempts: int = 1, retryable: bool = False, retry_after: float | None = None):
        self.kind, self.backend, self.reason = kind, backend, reason
        self.status, self.attempts = status, attempts
        self.retryable, self.retry_after = retryable, retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.kind} backend {self.backend!r}: {self.reason}{status}{tries}"

    def __reduce__(self):  # picklable across processes (multiprocessing workers)
        return (type(self), (self.kind, self.backend, self.reason, self.status, self.attempts,
                             self.retryable, self.retry_after))

    def as_dict(self) -> dict:
        return {"kind": self.kind, "backend": self.backend, "reason": self.reason,
                "status": self.status, "attempts": self.attempts}
