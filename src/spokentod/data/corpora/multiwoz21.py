"""MultiWOZ 2.1 → Dialogues: the ConvLab-2 release (tokenized text) and the original format.

Layout: ``{dialogue_id: {"goal": {...}, "log": [turn, ...]}}``. Even turns are the user, odd turns the
system. A system turn's ``metadata`` holds the state *after the preceding user turn* (MultiWOZ 2.1's
convention), so each user turn gets its state from the system turn that follows it.

Slot naming, shared by every MultiWOZ-style loader here (multiwoz22, spokenwoz, speech-aware-multiwoz,
dialogstudio) — the names of SpokenWOZ's TripPy config (``shared/data/spokenwoz/trippy_config.json``):
``{domain: {slot: value}}``, lower-case domains; informable slots lower-case without spaces
(``pricerange``, ``arriveby``, ``leaveat``, ``area``, ``name``, ``type``, ``stars`` ...); booking slots
prefixed ``"book "`` (``book people``, ``book day``, ``book stay``, ``book time``). Values are kept as
annotated (trimmed). ``""``, ``"not mentioned"`` and ``"none"`` mean "not set" and are dropped (TRADE does
the same with "none": it marks slots the user never filled); ``"dontcare"`` is kept, a tracker must
predict it. The 2.1 ``booked`` lists are booking *results*, not state: they go to the system turn's
metadata.

``load(path)``: a dialogue file (val.json, test.json, the original data.json), or a directory, whose
``*.json`` files in this format are all loaded (other JSON there, e.g. ontology.json, is ignored).
Text is detokenized (``"John 's"`` → ``"John's"``); the raw text stays in ``metadata["text_raw"]`` when it
differs, because ``span_info`` word positions refer to it. An empty utterance is not a turn: it is
left out and its raw position listed in ``metadata["empty_turns_dropped"]``.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from spokentod.data.corpora import corpus
from spokentod.data.corpora._util import convert_records, read_json, require
from spokentod.data.schema import Dialogue, Speaker, State, Turn
from spokentod.data.text import detokenize, read_head
from spokentod.errors import DataError, Problem

MWZ_DOMAINS = frozenset({"attraction", "bus", "hospital", "hotel", "police", "restaurant", "taxi", "train"})
EMPTY_VALUES = frozenset({"", "not mentioned", "none"})
# Booking slots that MultiWOZ 2.2 ("restaurant-bookday") marks and DSTC11 ("restaurant-day") does not.
_BARE_BOOK = {
    "hotel": {"day", "people", "stay"},
    "restaurant": {"day", "people", "time"},
    "train": {"people"},
}


@lru_cache(maxsize=4096)  # a few dozen distinct names, called for every slot of every turn
def canonical_slot(domain: str, slot: str, book: bool = False) -> str:
    """One name per slot whatever the source spelling: ``arriveBy``/``arrive by``/``arriveby`` →
    ``arriveby``; ``bookday``/``book_day``/``book day`` (or ``day`` in a 2.1 ``book`` section, or a bare
    ``day`` for hotel/restaurant) → ``book day``."""
    s = " ".join(slot.strip().lower().replace("_", " ").split())
    if s.startswith("book"):
        s, book = s[4:].strip(), True
    s = s.replace(" ", "")
    if book or s in _BARE_BOOK.get(domain.lower(), ()):
        return f"book {s}"
    return s


def split_slot(name: str) -> tuple[str, str]:
    """``"hotel-book day"`` → ``("hotel", "book day")`` (canonical)."""
    domain, sep, slot = name.partition("-")
    if not sep or not domain or not slot:
        raise ValueError(f"slot name {name!r} is not of the form 'domain-slot'")
    return domain.lower(), canonical_slot(domain, slot)


def canonical_value(value: Any, file: str, record: str, field: str) -> str | list[str] | None:
    """Trimmed string, or a list when several gold values are given; None when the slot is not set."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        v = value.strip()
        return None if v.lower() in EMPTY_VALUES else v
    if isinstance(value, list):
        vals: list[str] = []
        for i, x in enumerate(value):
            v = canonical_value(x, file, record, f"{field}.{i}")
            for y in [v] if isinstance(v, str) else (v or []):
                if y not in vals:
                    vals.append(y)
        return None if not vals else vals[0] if len(vals) == 1 else vals
    raise DataError(file, record, field, f"expected a string value, got {type(value).__name__}")


def add_slot(state: State, domain: str, slot: str, value: str | list[str] | None) -> None:
    if value is not None:
        state.setdefault(domain, {})[slot] = value


def state_from_metadata(meta: Any, file: str, record: str, field: str) -> State:
    """MultiWOZ 2.1 ``{domain: {"semi": {...}, "book": {...}}}`` → canonical state."""
    if not isinstance(meta, dict):
        raise DataError(file, record, field, "expected an object {domain: {semi, book}}")
    state: State = {}
    for domain, parts in meta.items():
        if not isinstance(parts, dict):
            raise DataError(file, record, f"{field}.{domain}", "expected an object with 'semi' and 'book'")
        for section in ("semi", "book"):
            slots = parts.get(section, {})
            if not isinstance(slots, dict):
                raise DataError(file, record, f"{field}.{domain}.{section}", "expected an object")
            for slot, value in slots.items():
                if slot == "booked" or (isinstance(value, str) and value.strip().lower() in EMPTY_VALUES):
                    continue  # (the empty check first: most of the ~30 slots per turn are unset)
                v = canonical_value(value, file, record, f"{field}.{domain}.{section}.{slot}")
                add_slot(state, domain.lower(), canonical_slot(domain, slot, book=section == "book"), v)
    return state


def _booked(meta: dict) -> dict[str, list]:
    out = {}
    for domain, parts in meta.items():
        booked = parts.get("book", {}).get("booked") if isinstance(parts, dict) else None
        if booked:
            out[domain] = booked
    return out


def _speaker(turn: dict, i: int, file: str, record: str) -> Speaker:
    tag = turn.get("tag")  # SpokenWOZ names the speaker; MultiWOZ relies on turn parity
    if tag is None:
        return Speaker.user if i % 2 == 0 else Speaker.agent
    if tag in ("user", "system"):
        return Speaker.user if tag == "user" else Speaker.agent
    raise DataError(
        file, record, f"log.{i}.tag", f"unknown speaker tag {tag!r} (expected 'user' or 'system')"
    )


def log_turns(file: str, record: str, log: Any) -> tuple[list[Turn], list[int]]:
    """A 2.1 ``log`` → (turns, raw positions of empty utterances left out). User turns carry the
    cumulative state; acts are the ``dialog_act`` dicts."""
    if not isinstance(log, list):
        raise DataError(file, record, "log", "expected a list of turns")
    if not log:
        raise DataError(file, record, "log", "dialogue has no turns")
    for i, t in enumerate(log):
        if not isinstance(t, dict):
            raise DataError(file, record, f"log.{i}", "expected an object")
    speakers = [_speaker(t, i, file, record) for i, t in enumerate(log)]
    turns: list[Turn] = []
    dropped: list[int] = []
    for i, (t, sp) in enumerate(zip(log, speakers)):
        raw = require(t, "text", str, file, record, f"log.{i}.")
        text = detokenize(raw)
        if not text:  # not speech: left out, and listed so that nothing disappears silently
            dropped.append(i)
            continue
        meta = t.get("metadata") or {}
        if not isinstance(meta, dict):
            raise DataError(file, record, f"log.{i}.metadata", "expected an object")
        md: dict[str, Any] = {}
        if text != raw:
            md["text_raw"] = raw
        if t.get("span_info"):
            md["span_info"] = t["span_info"]
        state = None
        if sp == Speaker.user:
            if meta and "tag" not in t:
                raise DataError(
                    file,
                    record,
                    f"log.{i}.metadata",
                    "a user turn (even index) carries a dialogue state: speakers look misaligned",
                )
            if i + 1 < len(log) and speakers[i + 1] == Speaker.agent and log[i + 1].get("metadata"):
                state = state_from_metadata(log[i + 1]["metadata"], file, record, f"log.{i + 1}.metadata")
        elif booked := _booked(meta):
            md["booked"] = booked
        turns.append(
            Turn(index=len(turns), speaker=sp, text=text, state=state, acts=t.get("dialog_act"), metadata=md)
        )
    return turns, dropped


def convert(file: str, record: str, raw: Any, source: str = "multiwoz21") -> Dialogue:
    """One ``{goal, log}`` record → Dialogue. Ids lose the ``.json`` suffix of the original release so
    that 2.1, 2.2 and ConvLab ids agree (the raw id stays in ``metadata["original_id"]``)."""
    if not isinstance(raw, dict):
        raise DataError(file, record, None, "expected an object with 'goal' and 'log'")
    turns, dropped = log_turns(file, record, require(raw, "log", list, file, record))
    md: dict[str, Any] = {"empty_turns_dropped": dropped} if dropped else {}
    did = record.removesuffix(".json")
    if did != record:
        md["original_id"] = record
    goal = raw.get("goal")
    if isinstance(goal, dict):
        md["goal"] = goal
        md["domains"] = sorted(d for d, g in goal.items() if d in MWZ_DOMAINS and g)
    return Dialogue(id=did, source=source, turns=turns, metadata=md)


_HEAD = re.compile(r'^\s*\{\s*"[^"]+"\s*:\s*\{\s*"(?:goal|log)"\s*:')


def is_mwz21_file(p: Path, words: bool = False) -> bool:
    """Cheap check of a file's head: ``{"<id>": {"goal"|"log": ...`` and (SpokenWOZ) per-turn ``words``."""
    if p.suffix != ".json" or not p.is_file():
        return False
    head = read_head(p)
    return bool(_HEAD.match(head)) and (('"words"' in head) == words)


def _detect(p: Path) -> bool:
    if p.is_dir():
        if next(p.glob("*/Turn-*.wav"), None) is not None:
            return False  # per-turn audio beside the annotations: speech-aware-multiwoz
        return any(is_mwz21_file(f) for f in p.glob("*.json"))
    return is_mwz21_file(p)


def dialogue_files(path: str | os.PathLike, words: bool = False) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = [f for f in sorted(p.glob("*.json")) if is_mwz21_file(f, words)]
        if not files:
            raise DataError(str(p), message="no MultiWOZ 2.1-format dialogue files ({id: {goal, log}}) here")
        return files
    if not p.is_file():
        raise DataError(str(p), message="path does not exist")
    return [p]


def load_file(
    file: Path,
    lenient: bool,
    problems: list[Problem] | None,
    source: str = "multiwoz21",
) -> list[Dialogue]:
    data = read_json(file)
    if not isinstance(data, dict):
        raise DataError(str(file), message="expected a JSON object {dialogue_id: {goal, log}}")
    return convert_records(
        str(file), data.items(), partial(convert, str(file), source=source), lenient, problems
    )


@corpus("multiwoz21", detect=_detect, multiphase=False)
def load(
    path: str | os.PathLike, lenient: bool = False, problems: list[Problem] | None = None
) -> list[Dialogue]:
    """MultiWOZ 2.1 (ConvLab-2 or original format): a file, or a directory of such files."""
    out: list[Dialogue] = []
    for file in dialogue_files(path):
        out += load_file(file, lenient, problems)
    return out
