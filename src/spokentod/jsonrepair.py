"""Lenient JSON: the first object in a model's reply, read two ways, each saying what it had to fix.

`extract_object` (strict; the LLM judge) repairs only where that is safe: the object is extracted from
prose or code fences; trailing commas are dropped; Python-style quoting and True/False/None are read; a
truncated object (a reply cut at max_tokens) keeps only the members that were complete before the cut.
Anything else is a RepairError, never a guess: a judge's score must not be made up.

`loose_object` (forgiving; the DST tracker's output) reads whatever json rejects as far as it goes: bare
words, missing commas, mismatched closers, open strings and containers closed where the text stops. A
tracker's partial state is scored turn by turn against the reference, so a best reading (counted as
repaired) is worth more than none.
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


# --- the forgiving reader (loose_object) ------------------------------------------------------------------

class Number(str):
    """A number as loose_object read it, kept as its text (no float rounding: 1.50 stays "1.50")."""


_WORDS = {"null": None, "None": None, "true": True, "True": True, "false": False, "False": False}
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


class _Loose:
    """A forgiving JSON reader for what json rejects: single quotes, bare words, missing or trailing commas,
    mismatched closers, and text cut off mid-way (open strings and containers close where it stops)."""

    def __init__(self, s: str, i: int):
        self.s, self.i = s, i

    def peek(self) -> str:
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1
        return self.s[self.i] if self.i < len(self.s) else ""

    def value(self) -> Any:  # every call consumes at least one character: the loops below always end
        c = self.peek()
        if c == "{":
            return self.obj()
        if c == "[":
            return self.arr()
        return self.string(c) if c in ("'", '"') else self.word()

    def obj(self) -> dict:
        self.i += 1
        out: dict = {}
        while (c := self.peek()) not in ("", "]"):  # "]" closes an enclosing array: this object ends too
            if c in ",}":
                self.i += 1
                if c == "}":
                    break
                continue
            key = self.value()
            if self.peek() != ":":
                continue  # a key without a value (junk, or cut off): dropped
            self.i += 1
            if self.peek() == "":
                break
            val = self.value()
            if isinstance(key, str):
                out[key] = val
        return out

    def arr(self) -> list:
        self.i += 1
        out: list = []
        while (c := self.peek()) not in ("", "}"):
            self.i += c in ",]"
            if c == "]":
                break
            if c != ",":
                out.append(self.value())
        return out

    def string(self, quote: str) -> str:
        s, out = self.s, []
        self.i += 1
        while self.i < len(s):
            c = s[self.i]
            self.i += 1
            if c == quote:
                break
            if c == "\\" and self.i < len(s):
                c, self.i = s[self.i], self.i + 1
                if c == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[self.i:self.i + 4]):
                    c, self.i = chr(int(s[self.i:self.i + 4], 16)), self.i + 4
                c = _ESCAPES.get(c, c)
            out.append(c)
        text = "".join(out)
        try:  # \ud83d\ude00-style pairs → one character (lone halves would break writing the text later)
            return text.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeError:
            return text.encode("utf-8", "replace").decode("utf-8")

    def word(self) -> Any:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in ',:{}[]"\n':
            self.i += 1
        w = self.s[start:self.i].strip()
        if not w:
            self.i += 1  # a stray delimiter: skip it
            return None
        return _WORDS[w] if w in _WORDS else Number(w) if _NUMBER.fullmatch(w) else w


def loose_object(text: str, start: int) -> tuple[dict[str, Any], int, bool]:
    """The object whose "{" is at `start` → (object, where it ends, repaired). json reads it if it can
    (numbers kept as their text, as Number; NaN/Infinity as None); else the forgiving reader does, which
    never fails: what it cannot place is dropped. ValueError if `text[start]` is not "{"."""
    if text[start:start + 1] != "{":
        raise ValueError(f"no object at position {start}: {snippet(text[start:])}")
    try:
        decoder = json.JSONDecoder(parse_int=Number, parse_float=Number, parse_constant=lambda c: None)
        return (*decoder.raw_decode(text, start), False)
    except ValueError:
        reader = _Loose(text, start)
        return reader.value(), reader.i, True
