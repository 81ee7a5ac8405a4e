"""Reading dialogue states: predictions and references in our JSONL, MultiWOZ_Evaluation JSON, or from a
corpus loader's dialogues, into TurnStates keyed by dialogue and turn (the formats are described in the
package docstring)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spokentod.dst.data import normalize as N
from spokentod.errors import DataError, Problem

Item = tuple[str, str, Any]  # raw (domain, slot, value); value is a str or a tuple of str


@dataclass
class TurnState:
    dialogue_id: str
    ordinal: int
    index: int | None
    items: tuple[Item, ...]
    transcript: str | None = None
    active_domains: tuple[str, ...] | None = None


@dataclass
class Predictions:
    turns: dict[tuple[str, int], TurnState]
    indexing: str  # "index" or "ordinal": what the keys' int means
    problems: list[Problem] = field(default_factory=list)
    duplicates: int = 0


def dialogue_key(did: Any) -> str:
    return str(did).strip().lower().removesuffix(".json")



def _value(v: Any, where: str) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
        return tuple(str(x) for x in v)
    raise ValueError(f"{where}: expected a string or a list of strings, got {type(v).__name__}")


def flatten_state(state: Any, pool: dict | None = None) -> tuple[Item, ...]:
    """Any accepted state layout → raw (domain, slot, value) items. Raises ValueError when malformed.
    With a `pool`, equal items become one object: states are cumulative, so the same item recurs turn after
    turn, and the scorer's per-item memo then hits on identity instead of comparing strings."""
    if not isinstance(state, dict):
        kind = type(state).__name__  # bad input data, not a caller's bug: readers collect ValueErrors as Problems
        raise ValueError(f"state: expected an object {{domain: {{slot: value}}}}, got {kind}")  # noqa: TRY004
    out: list[Item] = []
    for d, slots in state.items():
        if isinstance(slots, dict) and any(isinstance(slots.get(p), dict) for p in ("semi", "book")):
            for part in ("semi", "book"):  # MultiWOZ 2.1 metadata; "booked" holds results, not state
                for s, v in (slots.get(part) or {}).items():
                    if s != "booked":
                        name = f"book {s}" if part == "book" else s
                        out.append((d, name, _value(v, f"state.{d}.{part}.{s}")))
        elif isinstance(slots, dict):
            out.extend((d, s, _value(v, f"state.{d}.{s}")) for s, v in slots.items())
        elif "-" in str(d):  # flat "hotel-area": value
            dom, _, s = str(d).partition("-")
            out.append((dom, s, _value(slots, f"state.{d}")))
        else:
            raise ValueError(f"state.{d}: expected an object {{slot: value}}, got {type(slots).__name__}")
    if pool is None:
        return tuple(i for i in out if i[2] is not None)
    return tuple(pool.setdefault(i, i) for i in out if i[2] is not None)


def _records(path: Path) -> tuple[str, list[tuple[str, Any]]]:
    """("mwz_eval", [(dialogue_id, [entries])]) or ("jsonl", [(location, record-or-error)])."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip()[:1] in ("{", "["):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # several JSON lines, or broken: read line by line below
        if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
            return "mwz_eval", list(obj.items())
        if isinstance(obj, list):
            return "jsonl", [(f"item {i}", r) for i, r in enumerate(obj)]
    out: list[tuple[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                out.append((f"line {n}", ValueError(f"malformed JSON: {e.msg}")))
    return "jsonl", out


def read_states(path: str | os.PathLike, turn_index: str = "index",
                ) -> tuple[list[TurnState], str, list[Problem]]:
    """Read a JSONL or MultiWOZ_Evaluation file → (turn states, indexing, problems found)."""
    if turn_index not in ("index", "ordinal"):
        raise ValueError("turn_index must be 'index' or 'ordinal'")
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), message="file does not exist")
    kind, recs = _records(p)
    out: list[TurnState] = []
    pool: dict = {}
    problems: list[Problem] = []
    if kind == "mwz_eval":
        for did, entries in recs:
            for k, e in enumerate(entries):
                try:
                    if not isinstance(e, dict) or "state" not in e:
                        raise ValueError("expected an object with 'state'")
                    items = flatten_state(e["state"], pool)
                    out.append(TurnState(dialogue_key(did), k, None, items, e.get("transcript"),
                                         _domains(e.get("active_domains"))))
                except ValueError as err:
                    problems.append(Problem(str(p), f"{did} turn {k}", None, str(err)))
        return out, "ordinal", problems
    for loc, r in recs:
        try:
            if isinstance(r, Exception):
                raise r
            if not isinstance(r, dict):
                raise ValueError("expected a JSON object")  # noqa: TRY004 (a bad record: a Problem, below)
            for key in ("dialogue_id", "turn", "state"):
                if key not in r:
                    raise ValueError(f"missing field {key!r}")
            turn = r["turn"]
            whole = isinstance(turn, int) and not isinstance(turn, bool) and turn >= 0
            if not (whole or (isinstance(turn, str) and turn.isdigit())):
                raise ValueError(f"field 'turn' must be a non-negative integer, got {turn!r}")
            t, items = int(turn), flatten_state(r["state"], pool)
            index = t if turn_index == "index" else None
            out.append(TurnState(dialogue_key(r["dialogue_id"]), t, index, items,
                                 r.get("transcript", r.get("text")), _domains(r.get("active_domains"))))
        except ValueError as err:
            problems.append(Problem(str(p), loc, None, str(err)))
    return out, turn_index, problems


def _active(md: dict) -> tuple[str, ...] | None:
    """Loader metadata: "active_domains", or SGD's "services_in_turn" (the services of the turn's frames)."""
    v = md.get("active_domains", md.get("services_in_turn"))
    return _domains(v) if isinstance(v, (list, tuple)) else None


def _domains(v: Any) -> tuple[str, ...] | None:
    if v is not None and not isinstance(v, (list, tuple)):
        raise ValueError(f"active_domains: expected a list, got {type(v).__name__}")
    return None if v is None else tuple(N.canonical_domain(d) for d in v)


def read_predictions(path: str | os.PathLike, turn_index: str = "index") -> Predictions:
    """Predictions keyed by (dialogue, turn). Malformed records and duplicates are reported, never fatal."""
    states, indexing, problems = read_states(path, turn_index)
    preds = Predictions({}, indexing, problems)
    for ts in states:
        key = (ts.dialogue_id, ts.index if indexing == "index" else ts.ordinal)
        if key in preds.turns:
            preds.duplicates += 1  # keep the first: a rerun appended to the file must not win silently
            continue
        preds.turns[key] = ts
    return preds


def read_references(path: str | os.PathLike, turn_index: str = "index") -> list[list[TurnState]]:
    """References from a file (strict: a malformed record is an error), grouped by dialogue in order."""
    states, _, problems = read_states(path, turn_index)
    if problems:
        raise DataError.many(problems)
    dialogues: dict[str, list[TurnState]] = {}
    seen: set[tuple[str, int]] = set()
    for ts in states:
        if (ts.dialogue_id, ts.ordinal) in seen:
            raise DataError(str(path), ts.dialogue_id, "turn", f"turn {ts.ordinal} is given twice")
        seen.add((ts.dialogue_id, ts.ordinal))
        dialogues.setdefault(ts.dialogue_id, []).append(ts)
    for turns in dialogues.values():
        turns.sort(key=lambda t: t.ordinal)
        for k, t in enumerate(turns):  # with Turn.index keys the ordinal is the rank among user turns
            t.ordinal = k
    return list(dialogues.values())


def references_from_dialogues(dialogues: Iterable) -> list[list[TurnState]]:
    """spokentod Dialogues (corpus loaders) → references: user turns that carry a state."""
    out, pool = [], {}
    for d in dialogues:
        turns = [t for t in d.user_turns if t.state is not None]
        out.append([TurnState(dialogue_key(d.id), k, t.index, flatten_state(t.state, pool), t.text,
                              _active(t.metadata)) for k, t in enumerate(turns)])
    return [d for d in out if d]
