"""Lenient JSON: the first object in a model's reply, repaired where that is safe, with a note for each
repair and a precise reason when there is nothing usable.

Safe repairs: the object is extracted from prose or code fences; trailing commas are dropped; Python-style
quoting and True/False/None are read; a truncated object (a reply cut at max_tokens) keeps only the
members that were complete before the cut. Anything else is a RepairError, never a guess.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any


class RepairError(ValueError):
    """No usable JSON object; str(e) says why (recorded as a missing value's reason)."""


def snippet(text: str, n: int = 60) -> str:
    t = " ".join(text.split())
    return repr(t[:n] + ("..." if len(t) > n else ""))


def _scan(text: str, start: int) -> tuple[int | None, int | None]:
    """From the '{' at `start`: (end of the balanced object or None if truncated, position of the last
    ',' at depth 1 — where the last complete top-level member ends)."""
    depth, quote, esc, last_comma = 0, None, False, None
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == quote:
                quote = None
        elif c in "\"'":
            # an apostrophe inside a bare word (don't) is not a quote; only one right after a delimiter
            prev = text[i - 1] if i else " "
            if c == '"' or prev in "{[,: \n\t":
                quote = c
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1, last_comma
        elif c == "," and depth == 1:
            last_comma = i
    return None, last_comma


def _loads(candidate: str, notes: list[str]) -> Any:
    try:
        return json.loads(candidate)
    except ValueError:
        pass
    fixed = re.sub(r",\s*([}\]])", r"\1", candidate)
    if fixed != candidate:
        try:
            obj = json.loads(fixed)
            notes.append("removed trailing commas")
            return obj
        except ValueError:
            pass
    # Python-style: single quotes, True/False/None (a common weak-model habit)
    py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", fixed)))
    try:
        obj = ast.literal_eval(py)
        notes.append("parsed as a Python literal (single quotes)")
        return obj
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise RepairError(f"malformed JSON: {snippet(candidate)}") from None


def extract_object(text: str | None, what: str = "reply") -> tuple[dict[str, Any], list[str]]:
    """The first JSON object in `text`, repaired where safe: (object, repair notes). RepairError says why
    there is none, naming the text as `what` ("judge reply")."""
    notes: list[str] = []
    if text is None or not text.strip():
        raise RepairError(f"empty {what}")
    start = text.find("{")
    if start < 0:
        raise RepairError(f"no JSON object in {what} (prose): {snippet(text)}")
    end, last_comma = _scan(text, start)
    if end is None:  # truncated (max_tokens): keep the members that were complete before the cut
        if last_comma is None:
            raise RepairError(f"truncated JSON with no complete field: {snippet(text[start:])}")
        candidate = text[start:last_comma] + "}"
        notes.append("truncated JSON: kept the complete fields")
    else:
        candidate = text[start:end]
        if text[:start].strip() or text[end:].strip():
            notes.append("extracted the JSON object from surrounding text")
    obj = _loads(candidate, notes)
    if not isinstance(obj, dict):
        raise RepairError(f"{what} is not a JSON object: {snippet(candidate)}")
    return obj, notes
