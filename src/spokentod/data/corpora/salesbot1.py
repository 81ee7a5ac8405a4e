"""SalesBot 1.0 original format (``salesbot1/*.json``) → multi-phase Dialogues.

Each record: ``{"id", "dialog": [str, ...], "intent": {"type": [name, ...], "position": k},
"transition_candidates": [4 × str], "filename"}``. Turns alternate and carry no speaker.

``position`` is the user turn in which the intent detector fired; ``dialog[position + 1]`` is the agent's
transition sentence, which is ``transition_candidates[0]`` in every example (recorded as
``metadata["transition_consistent"]``). Hence:

- speakers: turn ``i`` is the user iff ``i`` has the parity of ``position`` (dialogues may open with
  either side);
- phases: chit-chat before ``position``; ``position`` (the user's implicit intent) and ``position + 1``
  (the agent's pivot) are the transition — the first of them is the transition turn, as in SalesBot 2.0;
  task after.

The intent is ``type[0]`` (all of them in ``metadata["intents"]`` when several); ``filename``
(``Merge_SGD`` or ``TOD_Simulators``) is ``metadata["subset"]``. The TOD half of ``Merge_SGD`` is
delexicalized (``[attraction_name]``) and kept as is. Empty strings are not turns (raw positions in
``metadata["empty_turns_dropped"]``).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from spokentod.data.corpora import corpus
from spokentod.data.corpora._util import convert_records, read_json, require
from spokentod.data.corpora.salesbot2 import _records
from spokentod.data.schema import Dialogue, Intent, Phase, Speaker, Turn
from spokentod.data.text import read_head
from spokentod.errors import DataError, Problem


def convert(file: str, record: str, raw: Any) -> Dialogue:
    if not isinstance(raw, dict):
        raise DataError(file, record, None, "expected an object")
    did = require(raw, "id", str, file, record)
    dialog = require(raw, "dialog", list, file, record)
    intent = require(raw, "intent", dict, file, record)
    types = require(intent, "type", list, file, record, "intent.")
    position = require(intent, "position", int, file, record, "intent.")
    if not dialog:
        raise DataError(file, record, "dialog", "dialogue has no turns")
    if not types or not all(isinstance(t, str) and t for t in types):
        raise DataError(file, record, "intent.type", "expected a non-empty list of intent names")
    if not 0 <= position < len(dialog) - 1:
        raise DataError(
            file,
            record,
            "intent.position",
            f"position {position} leaves no transition turn in a dialog of {len(dialog)}",
        )
    turns: list[Turn] = []
    dropped: list[int] = []
    for i, text in enumerate(dialog):
        if not isinstance(text, str):
            raise DataError(file, record, f"dialog.{i}", f"expected a string, got {type(text).__name__}")
        if not text.strip():
            if i in (position, position + 1):
                raise DataError(file, record, f"dialog.{i}", "a transition turn is empty")
            dropped.append(i)
            continue
        speaker = Speaker.user if (i - position) % 2 == 0 else Speaker.agent
        phase = Phase.chitchat if i < position else Phase.transition if i <= position + 1 else Phase.task
        turns.append(Turn(index=len(turns), speaker=speaker, text=" ".join(text.split()), phase=phase))
    candidates = raw.get("transition_candidates") or []
    md: dict[str, Any] = {
        "transition_position": position,
        "transition_consistent": bool(candidates) and dialog[position + 1] == candidates[0],
        "transition_candidates": candidates,
    }
    if len(types) > 1:
        md["intents"] = types
    if isinstance(raw.get("filename"), str):
        md["subset"] = raw["filename"]
    if dropped:
        md["empty_turns_dropped"] = dropped
    return Dialogue(id=did, source="salesbot1", intent=Intent(type=types[0]), turns=turns, metadata=md)


def _is_salesbot1(p: Path) -> bool:
    head = read_head(p, 8192) if p.is_file() else ""
    return head.lstrip().startswith("[") and '"transition_candidates"' in head


def _detect(p: Path) -> bool:
    return any(_is_salesbot1(f) for f in p.glob("*.json")) if p.is_dir() else _is_salesbot1(p)


@corpus("salesbot1", detect=_detect, multiphase=True)
def load(
    path: str | os.PathLike, lenient: bool = False, problems: list[Problem] | None = None
) -> list[Dialogue]:
    """A SalesBot 1.0 file, or a directory of them (every ``*.json`` in SalesBot 1.0 format)."""
    p = Path(path)
    files = sorted(f for f in p.glob("*.json") if _is_salesbot1(f)) if p.is_dir() else [p]
    if not files:
        raise DataError(str(p), message="no SalesBot 1.0 files (*.json with transition_candidates) here")
    out: list[Dialogue] = []
    for f in files:
        out += convert_records(
            str(f), _records(str(f), read_json(f)), partial(convert, str(f)), lenient, problems
        )
    return out
