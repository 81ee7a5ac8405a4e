"""JSONL manifests: one Dialogue per line, streamed and schema-validated."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spokentod.atomic import atomic_write
from spokentod.data.schema import Dialogue
from spokentod.errors import DataError, Problem, validation_problems


def parse_dialogue(obj: object, file: str, record: str) -> Dialogue:
    try:
        return Dialogue.model_validate(obj)
    except ValidationError as e:
        raise DataError.many(validation_problems(e, file, record)) from None


@dataclass
class ManifestLine:
    """One non-blank manifest line: the parsed JSON (None if malformed), the Dialogue (None if invalid)
    and the Problems that kept it from being one."""

    lineno: int
    record: str  # "line N" or "line N (dialogue id)", as Problems name it
    obj: Any
    dialogue: Dialogue | None
    problems: list[Problem]


def iter_manifest_lines(path: str | os.PathLike) -> Iterator[ManifestLine]:
    """Every non-blank line with its outcome; never raises for a bad line (validate wants them all)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), message="manifest does not exist" if not path.exists() else "not a file")
    # Binary + per-line decode: one bad byte must cost one line, not abort the whole read.
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            record = f"line {lineno}"
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield ManifestLine(lineno, record, None, None,
                                   [Problem(str(path), record, None, f"not UTF-8 text: {e.reason} at byte {e.start}")])
                continue
            except json.JSONDecodeError as e:
                yield ManifestLine(lineno, record, None, None,
                                   [Problem(str(path), record, None, f"malformed JSON: {e.msg} at column {e.colno}")])
                continue
            if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                record = f"line {lineno} ({obj['id']})"
            try:
                yield ManifestLine(lineno, record, obj, parse_dialogue(obj, str(path), record), [])
            except DataError as err:
                yield ManifestLine(lineno, record, obj, None, err.problems)


def read_manifest(path: str | os.PathLike, lenient: bool = False,
                  problems: list[Problem] | None = None) -> Iterator[Dialogue]:
    """Yield dialogues one line at a time.

    Strict (default): the first bad line raises DataError naming file, line/id and field.
    Lenient: bad lines are skipped and appended to `problems` (pass a list to collect them).
    """
    for line in iter_manifest_lines(path):
        if line.dialogue is not None:
            yield line.dialogue
        elif not lenient:
            raise DataError.many(line.problems)
        elif problems is not None:
            problems.extend(line.problems)


def resolve_audio_path(base: str | os.PathLike, audio_path: str,
                       root: str | os.PathLike | None = None) -> Path:
    """Where a turn's audio lives: relative paths are relative to `base` (the manifest's folder).

    The resolved file (symlinks followed) must lie inside `root` (default `base`), so a manifest can
    never make us read ``../../etc/passwd`` or an absolute path elsewhere. Raises ValueError if not.
    """
    if not audio_path or not audio_path.strip():
        raise ValueError("audio path is empty")
    base = Path(base)
    fence = Path(root if root is not None else base).resolve()
    p = Path(audio_path)
    resolved = (p if p.is_absolute() else base / p).resolve()
    if not resolved.is_relative_to(fence):
        raise ValueError(f"audio path {audio_path!r} resolves to {resolved}, outside the root {fence}")
    return resolved


def write_manifest(path: str | os.PathLike, dialogues: Iterable[Dialogue]) -> int:
    """Write dialogues as JSONL (atomically: a crash never leaves half a manifest). Returns the count."""
    n = 0

    def write(f) -> None:  # streamed: `dialogues` may be a generator too large to hold as one string
        nonlocal n
        for d in dialogues:
            f.write((d.model_dump_json(exclude_none=True) + "\n").encode("utf-8"))
            n += 1

    atomic_write(path, write)  # a failed write (bad input iterator, disk full) leaves no debris
    return n
