"""Shared helpers for corpus loaders: JSON reading with located errors, lenient record handling."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from spokentod.data.schema import Dialogue
from spokentod.errors import DataError, Problem, validation_problems

T = TypeVar("T")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(str(path), None, None, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise DataError(str(path), None, None, f"not UTF-8 text: {e}") from None


def convert_records(file: str, records: Iterable[tuple[str, T]], convert: Callable[[str, T], Dialogue],
                    lenient: bool, problems: list[Problem] | None) -> list[Dialogue]:
    """Run `convert(record_id, raw)` over records. A failure raises DataError naming file/record/field,
    or in lenient mode is recorded in `problems` and the record skipped (never silently)."""
    out: list[Dialogue] = []
    for rid, raw in records:
        try:
            out.append(convert(rid, raw))
        except DataError as e:
            errs = [Problem(file, p.record or rid, p.field, p.message) for p in e.problems]
            if not lenient:
                raise DataError.many(errs) from None
            if problems is not None:
                problems.extend(errs)
        except ValidationError as e:
            errs = validation_problems(e, file, rid)
            if not lenient:
                raise DataError.many(errs) from None
            if problems is not None:
                problems.extend(errs)
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
            field = str(e.args[0]) if isinstance(e, KeyError) and e.args else None
            msg = f"missing field {field!r}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            err = Problem(file, rid, field, msg)
            if not lenient:
                raise DataError.many([err]) from None
            if problems is not None:
                problems.append(err)
    return out


def require(obj: Any, key: str, typ: type | tuple[type, ...], file: str, record: str, field_prefix: str = "") -> Any:
    """obj[key] with a type check; raises DataError naming the field."""
    field = f"{field_prefix}{key}"
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(file, record, field, "missing required field")
    val = obj[key]
    if not isinstance(val, typ):
        raise DataError(file, record, field, f"expected {getattr(typ, '__name__', typ)}, got {type(val).__name__}")
    return val
