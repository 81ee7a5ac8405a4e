"""JSONL manifests: one Dialogue per line, streamed and schema-validated."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from spokentod.data.schema import Dialogue
from spokentod.errors import DataError, Problem


def validation_problems(file: str, record: str, err: ValidationError) -> list[Problem]:
    """Turn a pydantic error into Problems naming the field path (e.g. turns.3.phase)."""
    return [Problem(file, record, ".".join(str(x) for x in e["loc"]) or None, e["msg"]) for e in err.errors()]


def parse_dialogue(obj: object, file: str, record: str) -> Dialogue:
    try:
        return Dialogue.model_validate(obj)
    except ValidationError as e:
        raise DataError.many(validation_problems(file, record, e)) from None


def read_manifest(path: str | os.PathLike, lenient: bool = False,
                  problems: list[Problem] | None = None) -> Iterator[Dialogue]:
    """Yield dialogues one line at a time.

    Strict (default): the first bad line raises DataError naming file, line/id and field.
    Lenient: bad lines are skipped and appended to `problems` (pass a list to collect them).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), message="manifest does not exist")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = f"line {lineno}"
            try:
                obj = json.loads(line)
                if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                    record = f"line {lineno} ({obj['id']})"
                yield parse_dialogue(obj, str(path), record)
            except json.JSONDecodeError as e:
                err = DataError(str(path), record, None, f"malformed JSON: {e.msg} at column {e.colno}")
                if not lenient:
                    raise err from None
                if problems is not None:
                    problems.extend(err.problems)
            except DataError as err:
                if not lenient:
                    raise
                if problems is not None:
                    problems.extend(err.problems)


def write_manifest(path: str | os.PathLike, dialogues: Iterable[Dialogue]) -> int:
    """Write dialogues as JSONL (atomically: a crash never leaves half a manifest). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for d in dialogues:
            f.write(d.model_dump_json(exclude_none=True) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
