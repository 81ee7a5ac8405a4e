"""Reading the tracker's output: the JSON {"transcript", "state"} a model generated, repaired when it is
wrapped in prose or code fences, truncated, single-quoted or has trailing commas. Never raises: what cannot
be read comes back with `error` set (then transcript "" and state {}), and every fix sets `repaired`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from spokentod.dst.data.examples import gold_state
from spokentod.jsonrepair import loose_object


@dataclass(frozen=True)
class ParsedOutput:
    transcript: str
    state: dict
    repaired: bool  # the output was not a clean target: something was stripped, closed, coerced or dropped
    error: str | None  # nothing usable found (then transcript "" and state {})


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


def parse_output(text: str) -> ParsedOutput:
    """The model's output → transcript and state. Never raises: what cannot be used is an `error`.

    The JSON is the first ``{...}`` holding "transcript" or "state"; prose or code fences around it are
    ignored. What json rejects is read by a forgiving reader (jsonrepair.loose_object). Values must be strings: numbers
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
            obj, end, repaired = loose_object(text, start)
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

