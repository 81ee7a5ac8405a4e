"""Reading the tracker's output: the JSON {"transcript", "state"} a model generated, repaired when it is
wrapped in prose or code fences, truncated, single-quoted or has trailing commas. Never raises: what cannot
be read comes back with `error` set (then transcript "" and state {}), and every fix sets `repaired`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from spokentod.dst.data.examples import gold_state


@dataclass(frozen=True)
class ParsedOutput:
    transcript: str
    state: dict
    repaired: bool  # the output was not a clean target: something was stripped, closed, coerced or dropped
    error: str | None  # nothing usable found (then transcript "" and state {})


class _Num(str):
    """A number as written in the output; slot values are strings, so it is kept as its text."""


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
        return _WORDS[w] if w in _WORDS else _Num(w) if _NUMBER.fullmatch(w) else w


def _text(v: Any) -> str | None:
    """A slot value or transcript as text: strings as they are, numbers as written; anything else is None."""
    if isinstance(v, str):
        return str(v)
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _clean_state(raw: dict) -> tuple[dict, bool]:
    state: dict[str, dict[str, str]] = {}
    fixed = False
    for domain, slots in raw.items():
        if not isinstance(slots, dict):
            fixed = True
            continue
        for slot, v in slots.items():
            t = _text(v)
            fixed |= t is None or type(v) is not str  # dropped (null, list, object, bool) or a number
            if t is not None:
                state.setdefault(str(domain), {})[str(slot)] = t
    return gold_state(state), fixed


def _decode(text: str, start: int) -> tuple[Any, int, bool]:
    """The JSON value at `start` → (value, where it ends, whether json rejected it)."""
    try:
        decoder = json.JSONDecoder(parse_int=_Num, parse_float=_Num, parse_constant=lambda c: None)
        return (*decoder.raw_decode(text, start), False)
    except ValueError:
        reader = _Loose(text, start)
        return reader.value(), reader.i, True


def parse_output(text: str) -> ParsedOutput:
    """The model's output → transcript and state. Never raises: what cannot be used is an `error`.

    The JSON is the first ``{...}`` holding "transcript" or "state"; prose or code fences around it are
    ignored. What json rejects is read by a forgiving reader (_Loose). Values must be strings: numbers
    become their text; null, lists, objects and booleans are dropped. A missing "transcript" gives "", a
    missing "state" {}. `repaired` is set whenever any of this was needed.
    """
    try:
        if not isinstance(text, str):
            return ParsedOutput("", {}, False, f"expected text, got {type(text).__name__}")
        starts = [m.start() for m in re.finditer("{", text)][:20]  # (a "{" in prose may come first)
        if not starts:
            return ParsedOutput("", {}, False, "no JSON object in the output")
        for start in starts:
            obj, end, repaired = _decode(text, start)
            if isinstance(obj, dict) and ("transcript" in obj or "state" in obj):
                break
        else:
            return ParsedOutput("", {}, False, "no JSON object with 'transcript' or 'state'")
        repaired |= bool(text[:start].strip() or text[end:].strip())  # prose or ``` fences around it
        transcript, raw_state = _text(obj.get("transcript")), obj.get("state")
        if transcript is None and not isinstance(raw_state, dict):
            return ParsedOutput("", {}, False, "neither 'transcript' nor 'state' is usable")
        repaired |= type(obj.get("transcript")) is not str
        state, fixed = _clean_state(raw_state) if isinstance(raw_state, dict) else ({}, True)
        return ParsedOutput(transcript or "", state, repaired or fixed, None)
    except Exception as e:  # noqa: BLE001 - e.g. RecursionError on absurd nesting: never raise
        return ParsedOutput("", {}, False, f"unparseable output: {type(e).__name__}: {e}")


# --- examples ------------------------------------------------------------------------------------------

