"""MultiWOZ 2.2 → Dialogues (SGD-style ``turns[].frames[].state.slot_values``).

Layout: a JSON list of ``{"dialogue_id", "services", "turns"}`` — one shard (``dialogues_NNN.json``),
a split directory or the root with train/dev/test (as for SGD), or any single file in that format (such
as ``shared/data/multiwoz/mwz22/examples_dialogstudio.json``).

Unlike SGD, every 2.2 user turn lists a frame for every service with that service's cumulative state,
so the state is read straight from the turn. Names follow the multiwoz21 convention:
``"restaurant-bookday"`` → ``{"restaurant": {"book day": ...}}``, ``"train-arriveby"`` → ``"arriveby"``.
A value is a string, or a list when the annotation gives several gold values
(``"taxi-leaveat": ["02:45", "after 02:30"]``). Ids lose the ``.json`` suffix (as in multiwoz21).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spokentod.data.corpora import corpus
from spokentod.data.corpora.multiwoz21 import MWZ_DOMAINS
from spokentod.data.corpora.sgd import _first_shard, frame_turns, frames_info, load_shards, shard_services
from spokentod.data.schema import Dialogue, Speaker, Turn
from spokentod.errors import Problem


def convert(
    file: str,
    split: str | None,
    schema: Any,
    schema_path: str | None,
    record: str,
    raw: Any,
    source: str = "multiwoz22",
) -> Dialogue:
    """Same signature as ``sgd.convert`` so that both share the shard walking in ``sgd.load_shards``."""
    did, spoken, dropped = frame_turns(file, record, raw)
    turns: list[Turn] = []
    for i, t, speaker, text, raw_text in spoken:
        state, md, acts = frames_info(t.get("frames", []), file, record, f"turns.{i}.frames")
        if speaker == Speaker.user and state is None:
            state = {}  # a user turn without frames states nothing new; 2.2 always lists frames
        if text != raw_text:
            md["text_raw"] = raw_text  # span offsets ("spans") refer to the raw utterance
        turns.append(
            Turn(
                index=len(turns),
                speaker=speaker,
                text=text,
                state=state if speaker == Speaker.user else None,
                acts=acts or None,
                metadata=md,
            )
        )
    bare = did.removesuffix(".json")
    md = {"services": raw.get("services", []), "original_id": did}
    if split:
        md["split"] = split
    if dropped:
        md["empty_turns_dropped"] = dropped
    if isinstance(raw.get("filename"), str):
        md["shard"] = raw["filename"]  # DialogStudio's examples name the 2.2 shard they came from
    return Dialogue(id=bare, source=source, turns=turns, metadata=md)


def _detect(p: Path) -> bool:
    shard = _first_shard(p)
    services = shard_services(shard) if shard else None
    return services is not None and all(s in MWZ_DOMAINS for s in services)


@corpus("multiwoz22", detect=_detect, multiphase=False)
def load(
    path: str | os.PathLike, lenient: bool = False, problems: list[Problem] | None = None
) -> list[Dialogue]:
    """MultiWOZ 2.2: a file of dialogues, a split directory, or the root with train/dev/test."""
    return load_shards(path, lenient, problems, "multiwoz22", convert=convert)
