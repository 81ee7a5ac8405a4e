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
