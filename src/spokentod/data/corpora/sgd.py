"""Schema-Guided Dialogue (DSTC8) → Dialogues, plus ``load_schema``.

Layout: ``{train,dev,test}/dialogues_NNN.json`` (each a list of dialogues) and ``{split}/schema.json``.
``load(path)`` takes a shard file, a split directory or the root holding the split directories.

State: user frames carry ``state.slot_values`` (slot → list of acceptable values) for the services of
*that* turn only; a service that is no longer discussed drops out of the frames. The cumulative state of
a user turn is therefore the last known state of every service seen so far:
``{service: {slot: value or [values]}}`` (service as domain, e.g. ``"Restaurants_1"``; SGD slot names
as-is). ``metadata["services_in_turn"]`` lists the turn's own frames, which is what SGD's official
joint goal accuracy scores. Per-turn ``active_intents`` and ``requested_slots`` go to turn metadata;
``acts`` is the list of frame actions, each with its ``service``. System ``service_results`` (database
rows) are summarised as a count to keep manifests small; ``service_call`` is kept. An empty utterance is
not a turn: it is left out and its raw position listed in ``metadata["empty_turns_dropped"]``.

Ids: SGD restarts ``1_00000`` in every split, so when the split is known (the shard's folder is
train/dev/test) the id is ``<split>_<dialogue_id>``; the raw id is ``metadata["original_id"]``.
The dialogue intent is the first active intent; with the split's ``schema.json`` beside the shard its
description is filled in and the schema path recorded in ``metadata["schema"]``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from spokentod.data.corpora import corpus
from spokentod.data.corpora._util import convert_records, read_json, require
from spokentod.data.corpora.multiwoz21 import MWZ_DOMAINS, add_slot, canonical_slot, canonical_value
from spokentod.data.schema import Dialogue, Intent, Speaker, State, Turn
from spokentod.data.text import detokenize, read_head
from spokentod.errors import DataError, Problem

SPLITS = ("train", "dev", "test")
_SPEAKERS = {"USER": Speaker.user, "SYSTEM": Speaker.agent}


def load_schema(path: str | os.PathLike) -> dict[str, dict]:
    """``schema.json`` (or a directory holding it) → ``{service_name: service entry}``."""
    p = Path(path)
    if p.is_dir():
        p = p / "schema.json"
    data = read_json(p)
    if not isinstance(data, list):
        raise DataError(str(p), message="expected a JSON list of services")
    out = {}
    for i, s in enumerate(data):
        name = require(s, "service_name", str, str(p), f"service {i}")
        require(s, "slots", list, str(p), name)
        require(s, "intents", list, str(p), name)
        out[name] = s
    return out


def frame_slot(frame: dict, slot: str) -> tuple[str, str]:
    """(domain, slot) of a ``slot_values`` key: MultiWOZ 2.2 writes ``"restaurant-bookday"``
    (→ ``("restaurant", "book day")``), SGD writes bare slots under the frame's service."""
    domain, sep, rest = slot.partition("-")
    if sep and domain.lower() in MWZ_DOMAINS:
        return domain.lower(), canonical_slot(domain, rest)
    return frame["service"], slot


def frames_info(frames: Any, file: str, record: str, field: str) -> tuple[State | None, dict[str, Any], list]:
    """A turn's frames → (state of these frames or None, metadata, acts)."""
    if not isinstance(frames, list):
        raise DataError(file, record, field, "expected a list of frames")
    state: State | None = None
    md: dict[str, Any] = {}
    acts = []
    for k, f in enumerate(frames):
        where = f"{field}.{k}"
        service = require(f, "service", str, file, record, f"{where}.")
        for a in f.get("actions") or []:
            acts.append({"service": service, **a})
        if f.get("slots"):
            md.setdefault("spans", []).extend({"service": service, **s} for s in f["slots"])
        if "service_call" in f:
            md.setdefault("service_call", {})[service] = f["service_call"]
        if "service_results" in f:
            md.setdefault("n_service_results", {})[service] = len(f["service_results"] or [])
        if "state" not in f:
            continue
        st = require(f, "state", dict, file, record, f"{where}.")
        values = require(st, "slot_values", dict, file, record, f"{where}.state.")
        state = {} if state is None else state
        for slot, v in values.items():
            domain, name = frame_slot(f, slot)
            add_slot(
                state, domain, name, canonical_value(v, file, record, f"{where}.state.slot_values.{slot}")
            )
        intent = st.get("active_intent")
        if intent and intent != "NONE":
            md.setdefault("active_intents", {})[service] = intent
        if st.get("requested_slots"):
            md.setdefault("requested_slots", {})[service] = st["requested_slots"]
    return state, md, acts


def _split_of(file: Path) -> str | None:
    return file.parent.name if file.parent.name in SPLITS else None


SpokenTurn = tuple[int, dict, Speaker, str, str]  # (raw position, raw turn, speaker, text, raw text)


def frame_turns(file: str, record: str, raw: Any) -> tuple[str, list[SpokenTurn], list[int]]:
    """The walk over SGD-style turns shared by SGD and MultiWOZ 2.2: checks each turn's speaker and
    utterance and returns (dialogue_id, [(raw position, turn, speaker, text, raw text)], dropped), where
    empty utterances are left out (not speech) and their raw positions listed (never silently)."""
    if not isinstance(raw, dict):
        raise DataError(file, record, None, "expected a dialogue object")
    did = require(raw, "dialogue_id", str, file, record)
    turns_raw = require(raw, "turns", list, file, record)
    if not turns_raw:
        raise DataError(file, record, "turns", "dialogue has no turns")
    spoken: list[SpokenTurn] = []
    dropped: list[int] = []
    for i, t in enumerate(turns_raw):
        if not isinstance(t, dict):
            raise DataError(file, record, f"turns.{i}", "expected an object")
        who = require(t, "speaker", str, file, record, f"turns.{i}.")
        if who not in _SPEAKERS:
            raise DataError(
                file, record, f"turns.{i}.speaker", f"unknown speaker {who!r} (expected USER or SYSTEM)"
            )
        raw_text = require(t, "utterance", str, file, record, f"turns.{i}.")
        text = detokenize(raw_text)
        if not text:  # e.g. SGD test 3_00055 ends with an empty SYSTEM GOODBYE: not speech, but say so
            dropped.append(i)
            continue
        spoken.append((i, t, _SPEAKERS[who], text, raw_text))
    return did, spoken, dropped


def convert(
    file: str,
    split: str | None,
    schema: dict[str, dict] | None,
    schema_path: str | None,
    record: str,
    raw: Any,
    source: str = "sgd",
) -> Dialogue:
    did, spoken, dropped = frame_turns(file, record, raw)
    turns: list[Turn] = []
    carried: State = {}  # last known state per service (see module doc)
    intent: tuple[str, str] | None = None  # (service, intent name)
    for i, t, speaker, text, raw_text in spoken:
        frame_state, md, acts = frames_info(t.get("frames", []), file, record, f"turns.{i}.frames")
        state = None
        if speaker == Speaker.user:
            md["services_in_turn"] = [f["service"] for f in t.get("frames", [])]
            if frame_state is not None:  # a frame's state is cumulative for its service: it replaces
                carried.update({s: frame_state.get(s, {}) for s in md["services_in_turn"]})
            state = {s: dict(v) for s, v in carried.items() if v}
            intent = intent or next(iter(md.get("active_intents", {}).items()), None)
        if text != raw_text:
            md["text_raw"] = raw_text
        turns.append(
            Turn(
                index=len(turns),
                speaker=speaker,
                text=text,
                state=state,
                acts=acts or None,
                metadata=md,
            )
        )
    md = {"services": raw.get("services", []), "original_id": did}
    if dropped:
        md["empty_turns_dropped"] = dropped
    if split:
        md["split"] = split
    if schema_path:
        md["schema"] = schema_path
    return Dialogue(
        id=f"{split}_{did}" if split else did,
        source=source,
        turns=turns,
        intent=Intent(type=intent[1], description=_intent_description(schema, *intent)) if intent else None,
        metadata=md,
    )


def _intent_description(schema: dict[str, dict] | None, service: str, intent: str) -> str | None:
    # per service: Restaurants_1 and Restaurants_2 both have "FindRestaurants"
    for it in (schema or {}).get(service, {}).get("intents", []):
        if it.get("name") == intent:
            return it.get("description")
    return None


_SHARD = re.compile(r"dialogues_\d+\.json$")


def shard_files(path: str | os.PathLike) -> list[Path]:
    """A shard, a split directory (its ``dialogues_*.json``) or a root (every split's shards)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataError(str(p), message="path does not exist")
    files = sorted(f for f in p.glob("dialogues_*.json") if _SHARD.search(f.name))
    if not files:
        files = sorted(f for s in SPLITS for f in (p / s).glob("dialogues_*.json") if _SHARD.search(f.name))
    if not files:
        raise DataError(
            str(p), message="no dialogues_NNN.json shards here or in train/dev/test subdirectories"
        )
    return files


def load_shards(
    path: str | os.PathLike,
    lenient: bool,
    problems: list[Problem] | None,
    source: str,
    convert: Callable[..., Dialogue] = convert,
) -> list[Dialogue]:
    """Every shard under `path` through `convert(file, split, schema, schema_path, record, raw)`
    (MultiWOZ 2.2 shares this walk with its own convert)."""
    out: list[Dialogue] = []
    schemas: dict[Path, dict | None] = {}
    for file in shard_files(path):
        data = read_json(file)
        if not isinstance(data, list):
            raise DataError(str(file), message="expected a JSON list of dialogues")
        schema_file = file.parent / "schema.json"
        if schema_file not in schemas:
            schemas[schema_file] = load_schema(schema_file) if schema_file.is_file() else None
        schema = schemas[schema_file]
        records = [
            (str(x.get("dialogue_id", f"#{i}")) if isinstance(x, dict) else f"#{i}", x)
            for i, x in enumerate(data)
        ]
        conv = partial(
            convert, str(file), _split_of(file), schema, str(schema_file) if schema else None, source=source
        )
        out += convert_records(str(file), records, conv, lenient, problems)
    return out


_SERVICES = re.compile(r'"services"\s*:\s*\[([^\]]*)\]')


def shard_services(p: Path) -> list[str] | None:
    """The first dialogue's services, read from the head of a shard (None if it is not one)."""
    head = read_head(p, 8192)
    if not re.match(r'\s*\[\s*\{\s*"dialogue_id"', head):
        return None
    m = _SERVICES.search(head)
    return re.findall(r'"([^"]*)"', m.group(1)) if m else None


def _first_shard(p: Path) -> Path | None:
    try:
        return shard_files(p)[0]
    except DataError:
        return None


def _detect(p: Path) -> bool:
    shard = _first_shard(p)
    services = shard_services(shard) if shard else None
    # SGD service names carry a version suffix ("Restaurants_1"); MultiWOZ 2.2 uses bare domains.
    return bool(services) and all(re.search(r"_\d+$", s) for s in services)


@corpus("sgd", detect=_detect, multiphase=False)
def load(
    path: str | os.PathLike, lenient: bool = False, problems: list[Problem] | None = None
) -> list[Dialogue]:
    """SGD shard file, split directory, or root with train/dev/test."""
    return load_shards(path, lenient, problems, "sgd")
