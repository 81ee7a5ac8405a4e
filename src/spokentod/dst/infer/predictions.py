"""Writing what tracking produced: our predictions JSONL and the MultiWOZ_Evaluation input JSON; ``spokentod
dst score`` reads both. A turn whose tracker call failed (``error`` set, ``state`` None) is written with
``"state": null``, so the scorer counts it as a missing prediction rather than as an empty state (which
can be right early in a dialogue)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spokentod.atomic import atomic_write, write_json
from spokentod.dst.infer.track import TurnPrediction
from spokentod.dst.score.states import dialogue_key
from spokentod.errors import SpokenTODError


def _grouped(preds: Iterable[TurnPrediction]) -> dict[str, list[TurnPrediction]]:
    out: dict[str, list[TurnPrediction]] = {}
    for p in preds:
        out.setdefault(p.dialogue_id, []).append(p)
    for turns in out.values():
        turns.sort(key=lambda p: p.turn)
    return out


def write_predictions(preds: Iterable[TurnPrediction], path: str | os.PathLike) -> Path:
    """Our JSONL: one {"dialogue_id", "turn" (Turn.index), "transcript", "state"} per user turn, plus "raw",
    "repaired", "error" when set. Read by ``spokentod dst score`` (default --turn-index index)."""
    lines = [json.dumps(p.record(), ensure_ascii=False) + "\n" for p in preds]
    return atomic_write(path, "".join(lines))


def active_domains(state: dict | None) -> list[str]:
    """Domains with at least one slot in the predicted state."""
    return sorted(d for d, slots in (state or {}).items() if isinstance(slots, dict) and slots)


def write_multiwoz_eval(preds: Iterable[TurnPrediction], path: str | os.PathLike) -> Path:
    """MultiWOZ_Evaluation input: {dialogue_id: [{"state", "active_domains"}, ...]}, one entry per user
    turn in order. Ids are lower-cased without ".json" (as that tool writes them). Entries are placed by
    ordinal; a user turn that was not tracked (an ordinal gap) or whose call failed gets ``"state": null``
    (scored missing), so later turns keep their positions."""
    out: dict[str, list[dict[str, Any]]] = {}
    for did, turns in _grouped(preds).items():
        key = dialogue_key(did)
        if key in out:
            raise SpokenTODError(f"dialogue ids {did!r} and another one collide as {key!r} in MultiWOZ format")
        by_ord = {p.ordinal: p for p in turns}
        entries = []
        for k in range(max(by_ord) + 1):
            p = by_ord.get(k)
            if p is None:
                entries.append({"state": None, "error": "not tracked"})
                continue
            e: dict[str, Any] = {"state": p.state, "active_domains": active_domains(p.state)}
            if p.transcript:
                e["transcript"] = p.transcript
            if p.error:
                e["error"] = p.error
            entries.append(e)
        out[key] = entries
    return write_json(path, out, indent=1, ensure_ascii=False)
