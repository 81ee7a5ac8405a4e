"""DialogStudio unified format (salesforce/DialogStudio) → Dialogues.

A file is ``{"<dataset>--<split>--<n>": dialogue}``; a dialogue has ``"original dialog id"``,
``"dialog index"``, ``"original dialog info"``, ``"log"`` and, for some datasets, knowledge fields
(``"external knowledge"``, ``"external knowledge non-flat"``, ``"dst knowledge"``, ``"intent knowledge"``)
and ``"prompt"``. Each log row is one exchange: ``"user utterance"``, ``"system response"``,
``"dialog history"``, ``"original user side information"``, ``"original system side information"``
and, for TOD datasets, ``"dst"``, ``"dst accumulated"``, ``"intent"``.

A row becomes a user turn and an agent turn (an empty side — e.g. a system-initiated opening — is not a
turn; its row is listed in ``metadata["empty_turns_dropped"]``). The user turn's state, in the
multiwoz21 naming, is taken from the richest source present:

1. SGD-style frames (MultiWOZ 2.2, SGD, ...) in the user side information (``frames[].state``);
2. MultiWOZ 2.1 ``metadata`` (``{domain: {semi, book}}``) in the system side information — the state after
   the user's turn — or, if there, the user side;
3. the ``"dst accumulated"`` string (``"hotel pricerange cheap , hotel type hotel"``) when its domains are
   MultiWOZ domains.

Otherwise the state is None. Acts come from the side information's ``dialog_act``/frame actions;
the row's ``intent`` goes to the user turn's metadata. The dialogue id is the DialogStudio key; the
dataset, split, original id and knowledge fields are in metadata. (Only the unified format: the
``original_examples.json`` files beside it are in each dataset's own format — use that dataset's loader.)
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path
from typing import Any

from spokentod.data.corpora import corpus
from spokentod.data.corpora import multiwoz21 as mwz
from spokentod.data.corpora._util import convert_records, read_json, require
from spokentod.data.corpora.sgd import frames_info
from spokentod.data.schema import Dialogue, Speaker, State, Turn
from spokentod.data.text import detokenize, read_head
from spokentod.errors import DataError, Problem

_KNOWLEDGE = (
    "external knowledge",
    "external knowledge non-flat",
    "dst knowledge",
    "intent knowledge",
    "prompt",
)
# Multi-word slot names as the "dst" strings write them (the rest are one word).
_TWO_WORD = ("book day", "book people", "book stay", "book time", "price range", "arrive by", "leave at")


def parse_dst_string(s: str) -> State | None:
    """``"hotel pricerange cheap , hotel book day tuesday"`` → state; None when an item's domain is not a
    MultiWOZ domain (other datasets' strings are not reliably splittable into slot and value)."""
    state: State = {}
    for item in s.split(" , "):
        words = item.split()
        if not words:
            continue
        if len(words) < 3 or words[0].lower() not in mwz.MWZ_DOMAINS:
            return None
        domain, rest = words[0].lower(), " ".join(words[1:])
        two = next((t for t in _TWO_WORD if rest.lower().startswith(t + " ")), None)
        slot, value = (two, rest[len(two) + 1 :]) if two else (words[1], " ".join(words[2:]))
        mwz.add_slot(state, domain, mwz.canonical_slot(domain, slot), mwz.canonical_value(value, "", "", ""))
    return state


def _side(row: dict, key: str, file: str, record: str, field: str) -> dict:
    info = row.get(key) or {}
    if not isinstance(info, dict):
        raise DataError(file, record, f"{field}.{key}", "expected an object")
    return info


def row_state(
    row: dict, user: dict, system: dict, file: str, record: str, field: str
) -> tuple[State | None, dict, list]:
    """(state, extra user-turn metadata, user acts) of one log row; see the module doc for the order."""
    md: dict[str, Any] = {}
    acts: list = []
    if isinstance(user.get("frames"), list):
        state, md, acts = frames_info(
            user["frames"], file, record, f"{field}.original user side information.frames"
        )
        if state is not None:
            return state, md, acts
    for side, name in ((system, "system"), (user, "user")):
        if isinstance(side.get("metadata"), dict) and side["metadata"]:
            where = f"{field}.original {name} side information.metadata"
            return mwz.state_from_metadata(side["metadata"], file, record, where), md, acts
    dst = row.get("dst accumulated")
    if isinstance(dst, str) and dst.strip():
        state = parse_dst_string(dst)
        if state is None:
            md["dst_accumulated"] = dst
        return state, md, acts
    return None, md, acts


def convert(file: str, record: str, raw: Any) -> Dialogue:
    if not isinstance(raw, dict):
        raise DataError(file, record, None, "expected an object")
    log = require(raw, "log", list, file, record)
    if not log:
        raise DataError(file, record, "log", "dialogue has no turns")
    turns: list[Turn] = []
    dropped: list[int] = []
    for i, row in enumerate(log):
        field = f"log.{i}"
        if not isinstance(row, dict):
            raise DataError(file, record, field, "expected an object")
        user_text = detokenize(require(row, "user utterance", str, file, record, f"{field}."))
        sys_text = detokenize(require(row, "system response", str, file, record, f"{field}."))
        user = _side(row, "original user side information", file, record, field)
        system = _side(row, "original system side information", file, record, field)
        if user_text:
            state, md, acts = row_state(row, user, system, file, record, field)
            if row.get("intent"):
                md["intent"] = row["intent"]
            turns.append(
                Turn(
                    index=len(turns),
                    speaker=Speaker.user,
                    text=user_text,
                    state=state,
                    acts=acts or user.get("dialog_act"),
                    metadata=md,
                )
            )
        if sys_text:
            turns.append(
                Turn(index=len(turns), speaker=Speaker.agent, text=sys_text, acts=system.get("dialog_act"))
            )
        if not user_text or not sys_text:
            dropped.append(i)
    if not turns:
        raise DataError(file, record, "log", "every utterance is empty")
    dataset, _, rest = record.partition("--")
    split = rest.partition("--")[0]
    md: dict[str, Any] = {
        "dataset": dataset,
        "split": split or None,
        "original_id": raw.get("original dialog id"),
        "dialog_index": raw.get("dialog index"),
    }
    if raw.get("original dialog info"):
        md["original_dialog_info"] = raw["original dialog info"]
    md.update({k.replace(" ", "_"): raw[k] for k in _KNOWLEDGE if raw.get(k)})
    if dropped:
        md["empty_turns_dropped"] = dropped
    return Dialogue(
        id=record, source="dialogstudio", turns=turns, metadata={k: v for k, v in md.items() if v is not None}
    )


_HEAD = re.compile(r'^\s*\{\s*"[^"]+--[^"]+--\d+"\s*:\s*\{')


def _detect(p: Path) -> bool:
    return p.is_file() and bool(_HEAD.match(read_head(p, 4096)))


@corpus("dialogstudio", detect=_detect, multiphase=False)
def load(
    path: str | os.PathLike, lenient: bool = False, problems: list[Problem] | None = None
) -> list[Dialogue]:
    """A DialogStudio unified-format file (e.g. ``converted_examples.json`` or a split's ``train.json``)."""
    file = str(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(file, message='expected a JSON object {"<dataset>--<split>--<n>": dialogue}')
    return convert_records(file, data.items(), partial(convert, file), lenient, problems)
