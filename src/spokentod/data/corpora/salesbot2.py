"""SalesBot 2.0, original MSGD format (``salesbot2/MSGD_dataset.json``) → multi-phase Dialogues.

Each record: ``{"id", "intent": {"type", "description"}, "transition_sentence": {"utterance",
"position"}, "chitchat_context": [...], "dialog": ["User: ...", "Agent: ...", ...]}``.

- Speakers come from the ``"User: "``/``"Agent: "`` prefixes, not from alternation: some dialogues open
  with the agent or have two agent turns in a row.
- Phases by position in ``dialog``: before ``transition_sentence.position`` chit-chat, that turn the
  transition, after it task. (The file stops once the user voices the intent and the agent replies; the
  SGD task part is not in it, so "task" here is the lead-in to the hand-off.)
- ``metadata["transition_consistent"]``: whether ``dialog[position]`` equals the transition utterance;
  ``metadata["chitchat_context_len"]``; ``metadata["transition_position"]`` (raw position in ``dialog``).
- Intent: SalesBot spelling kept ("FindAttraction", "FindMovie"); free-text LLM intents are normalized
  ("FindBooks (related to ...)" → "FindBooks", "FindDogPlaydate." → "FindDogPlaydate"), the raw string in
  ``metadata["intent_raw"]``.
- Empty strings in ``dialog`` (artifacts in merge_0018 and merge_0030) are not turns: left out, their raw
  positions in ``metadata["empty_turns_dropped"]``. A text wrapped in one pair of double quotes
  (``Agent: "I gained ..."``) is unwrapped; the raw text is kept in the turn's ``metadata["text_raw"]``.
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path
from typing import Any

from spokentod.data.corpora import corpus
from spokentod.data.corpora._util import convert_records, read_json, require
from spokentod.data.schema import Dialogue, Intent, Phase, Speaker, Turn
from spokentod.data.text import read_head
from spokentod.errors import DataError, Problem

_PREFIX = re.compile(r"^(User|Agent):\s*(.*)$", re.DOTALL)
_SPEAKERS = {"User": Speaker.user, "Agent": Speaker.agent}


def normalize_intent(raw: str) -> str:
    """Drop parenthetical remarks and everything that is not a letter/digit: the intent names are
    CamelCase identifiers (SGD style), the LLM-written extras are not."""
    return re.sub(r"\W", "", re.sub(r"\(.*?\)", "", raw))


def unquote(text: str) -> str:
    """``"I gained weight"`` → ``I gained weight`` when one pair of double quotes wraps the whole text."""
    if len(text) >= 2 and text[0] == text[-1] == '"' and text.count('"') == 2:
        return text[1:-1].strip()
    return text


def split_speaker(line: str) -> tuple[Speaker, str] | None:
    m = _PREFIX.match(line.strip())
    return (_SPEAKERS[m.group(1)], m.group(2).strip()) if m else None


def _phase(i: int, position: int) -> Phase:
    return Phase.chitchat if i < position else Phase.transition if i == position else Phase.task


def convert(file: str, record: str, raw: Any) -> Dialogue:
    if not isinstance(raw, dict):
        raise DataError(file, record, None, "expected an object")
    did = require(raw, "id", str, file, record)
    dialog = require(raw, "dialog", list, file, record)
    intent = require(raw, "intent", dict, file, record)
    itype = require(intent, "type", str, file, record, "intent.")
    trans = require(raw, "transition_sentence", dict, file, record)
    position = require(trans, "position", int, file, record, "transition_sentence.")
    utterance = require(trans, "utterance", str, file, record, "transition_sentence.")
    context = require(raw, "chitchat_context", list, file, record)
    if not dialog:
        raise DataError(file, record, "dialog", "dialogue has no turns")
    if not 0 <= position < len(dialog):
        raise DataError(
            file,
            record,
            "transition_sentence.position",
            f"position {position} is outside the dialog (0..{len(dialog) - 1})",
        )
    turns: list[Turn] = []
    dropped: list[int] = []
    for i, line in enumerate(dialog):
        if not isinstance(line, str):
            raise DataError(file, record, f"dialog.{i}", f"expected a string, got {type(line).__name__}")
        if not line.strip():
            if i == position:
                raise DataError(file, record, f"dialog.{i}", "the transition utterance is empty")
            dropped.append(i)
            continue
        parsed = split_speaker(line)
        if parsed is None:
            raise DataError(file, record, f"dialog.{i}", "no 'User: ' or 'Agent: ' speaker prefix")
        speaker, raw_text = parsed
        text = unquote(raw_text)
        if not text:
            dropped.append(i)
            continue
        md = {"text_raw": raw_text} if text != raw_text else {}
        turns.append(
            Turn(index=len(turns), speaker=speaker, text=text, phase=_phase(i, position), metadata=md)
        )
    name = normalize_intent(itype)
    if not name:
        raise DataError(file, record, "intent.type", f"no intent name in {itype!r}")
    md: dict[str, Any] = {
        "transition_position": position,
        "transition_consistent": dialog[position] == utterance,
        "chitchat_context_len": len(context),
    }
    if name != itype:
        md["intent_raw"] = itype
    if dropped:
        md["empty_turns_dropped"] = dropped
    return Dialogue(
        id=did,
        source="salesbot2",
        intent=Intent(type=name, description=intent.get("description")),
        turns=turns,
        metadata=md,
    )


def _detect(p: Path) -> bool:
    head = read_head(p, 8192) if p.is_file() else ""
    return head.lstrip().startswith("[") and '"transition_sentence"' in head and '"chitchat_context"' in head


def _records(file: str, data: Any) -> list[tuple[str, Any]]:
    if not isinstance(data, list):
        raise DataError(file, message="expected a JSON list of dialogues")
    return [
        (x["id"] if isinstance(x, dict) and isinstance(x.get("id"), str) else f"#{i}", x)
        for i, x in enumerate(data)
    ]


@corpus("salesbot2", detect=_detect, multiphase=True)
def load(
    path: str | os.PathLike, lenient: bool = False, problems: list[Problem] | None = None
) -> list[Dialogue]:
    """SalesBot 2.0 MSGD file (a JSON list of dialogues)."""
    file = str(path)
    return convert_records(file, _records(file, read_json(path)), partial(convert, file), lenient, problems)
