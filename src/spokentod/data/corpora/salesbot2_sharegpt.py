"""SalesBot 2.0 fine-tuning data in ShareGPT/FastChat format (``test_tod_in_the_end.json``).

Each record: ``{"id", "conversations": [{"from": "human"|"gpt", "value": str}]}``; human = user,
gpt = agent. Turns may end in ``<intent>NAME</intent>``: the tag is removed from the text and kept in
the turn's ``metadata["intent_tag"]`` (``"None"`` included, as written).

Phases: chit-chat until the first user turn whose tag is not None (that turn is the transition), task
after it. The dialogue intent is that turn's tag.

The final agent turn ``<TOD>`` is the model's hand-off to the task-oriented system, not speech: it is
not made a turn (a spoken benchmark would otherwise ask a TTS to say "<TOD>"), it is recorded as
``metadata["tod_handoff"] = True``. Six dialogues have one untagged user turn followed by ``<TOD>``: the
hand-off shows the user's turn was the pivot, so that turn is the transition
(``metadata["transition_inferred"] = True``) and the intent is unknown (None).
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path
from typing import Any

from spokentod.data.corpora import corpus
from spokentod.data.corpora._util import convert_records, read_json, require
from spokentod.data.corpora.salesbot2 import _records
from spokentod.data.schema import Dialogue, Intent, Phase, Speaker, Turn
from spokentod.data.text import read_head
from spokentod.errors import DataError, Problem

_TAG = re.compile(r"<intent>(.*?)</intent>", re.DOTALL)
_SPEAKERS = {"human": Speaker.user, "gpt": Speaker.agent}
HANDOFF = "<TOD>"


def convert(file: str, record: str, raw: Any) -> Dialogue:
    if not isinstance(raw, dict):
        raise DataError(file, record, None, "expected an object")
    did = require(raw, "id", str, file, record)
    conv = require(raw, "conversations", list, file, record)
    last = conv[-1] if conv and isinstance(conv[-1], dict) else {}
    handoff = isinstance(last.get("value"), str) and last["value"].strip() == HANDOFF
    if handoff:
        conv = conv[:-1]
    if not conv:
        raise DataError(file, record, "conversations", "dialogue has no turns")
    items = []  # (speaker, text, tag)
    for i, m in enumerate(conv):
        who = require(m, "from", str, file, record, f"conversations.{i}.")
        value = require(m, "value", str, file, record, f"conversations.{i}.")
        if who not in _SPEAKERS:
            raise DataError(
                file, record, f"conversations.{i}.from", f"unknown role {who!r} (expected human or gpt)"
            )
        tags = [t.strip() for t in _TAG.findall(value)]
        text = _TAG.sub("", value).strip()
        if not text or text == HANDOFF:
            raise DataError(
                file,
                record,
                f"conversations.{i}.value",
                "empty turn" if not text else "<TOD> hand-off before the end of the dialogue",
            )
        items.append((_SPEAKERS[who], text, tags[-1] if tags else None))
    user = [i for i, (sp, _, _) in enumerate(items) if sp == Speaker.user]
    pivot = next((i for i in user if items[i][2] not in (None, "None")), None)
    md: dict[str, Any] = {"tod_handoff": handoff}
    if pivot is None and handoff and user:
        pivot = user[-1]
        md["transition_inferred"] = True
    turns = []
    for i, (sp, text, tag) in enumerate(items):
        phase = (
            Phase.chitchat if pivot is None or i < pivot else Phase.transition if i == pivot else Phase.task
        )
        turns.append(
            Turn(index=i, speaker=sp, text=text, phase=phase, metadata={"intent_tag": tag} if tag else {})
        )
    intent_tag = items[pivot][2] if pivot is not None else None
    user_tags = {items[i][2] for i in user if items[i][2] not in (None, "None")}
    if len(user_tags) > 1:
        md["user_intent_tags"] = sorted(user_tags)
    intent = Intent(type=intent_tag) if intent_tag not in (None, "None") else None
    return Dialogue(id=did, source="salesbot2-sharegpt", intent=intent, turns=turns, metadata=md)


def _detect(p: Path) -> bool:
    head = read_head(p, 16384) if p.is_file() else ""
    return head.lstrip().startswith("[") and '"conversations"' in head and "<intent>" in head


@corpus("salesbot2-sharegpt", detect=_detect, multiphase=True)
def load(
    path: str | os.PathLike, lenient: bool = False, problems: list[Problem] | None = None
) -> list[Dialogue]:
    """A ShareGPT-format SalesBot 2.0 file (a JSON list of {id, conversations})."""
    file = str(path)
    return convert_records(file, _records(file, read_json(path)), partial(convert, file), lenient, problems)
