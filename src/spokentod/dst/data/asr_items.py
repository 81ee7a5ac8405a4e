"""Phase-1 (ASR pre-training) items: whole audio files with their transcript, read from our dialogue
manifests or from lhotse manifests."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

from spokentod.data.manifest import read_manifest, resolve_audio_path
from spokentod.errors import DataError, Problem, SpokenTODError


@dataclass(frozen=True)
class AsrItem:
    id: str
    audio: str  # absolute path of a whole audio file
    text: str
    duration: float | None


# An AsrItem is a whole file: a supervision must cover its recording but for this much at either end.
_WHOLE_TOL_S = 0.5


def load_asr_items(path: str | os.PathLike) -> list[AsrItem]:
    """Items from (a) a lhotse CutSet jsonl(.gz), (b) lhotse recordings + supervisions manifests (either
    file, or their folder), (c) a spokentod dialogue manifest (every turn with audio, both speakers, id
    "<dialogue_id>/<turn index>"). Relative audio paths resolve against the manifest's folder. Strict:
    a missing audio file, an empty text or a segment of a longer recording raises DataError naming each."""
    p = Path(path)
    if p.is_dir():
        pairs = [(r, q) for r in sorted(p.glob("*recordings*.jsonl*"))
                 if (q := _partner(r, "recordings", "supervisions", strict=False))]
        if len(pairs) != 1:
            raise DataError(str(p), message="expected one lhotse recordings+supervisions pair, found "
                            f"{len(pairs)} {[r.name for r, _ in pairs]}")
        return _from_lhotse(p, *pairs[0])
    if not p.is_file():
        raise DataError(str(p), message="does not exist")
    first = _first_record(p)
    if "turns" in first:
        items, problems = [], []
        for d in read_manifest(p):
            for t in (t for t in d.turns if t.audio is not None):
                try:
                    audio = resolve_audio_path(p.parent, t.audio.path)
                except ValueError as e:
                    problems.append(Problem(str(p), d.id, f"turns.{t.index}.audio.path", str(e)))
                    continue
                item = AsrItem(f"{d.id}/{t.index}", str(audio), t.text, t.audio.duration)
                if why := _unusable(item):
                    problems.append(Problem(str(p), d.id, f"turns.{t.index}", why))
                else:
                    items.append(item)
        return _finish(p, items, problems)
    if "supervisions" in first or str(first.get("type", "")).endswith("Cut"):  # {type: MonoCut, ...}
        return _from_lhotse(p, None, None)
    if "sources" in first:
        return _from_lhotse(p, p, _partner(p, "recordings", "supervisions"))
    if "recording_id" in first:
        return _from_lhotse(p, _partner(p, "supervisions", "recordings"), p)
    raise DataError(str(p), "line 1", None,
                    "not a dialogue manifest, lhotse CutSet or lhotse recordings/supervisions manifest")


def _first_record(p: Path) -> dict:
    try:
        opener = gzip.open if p.name.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as f:
            line = next((x for x in f if x.strip()), None)
        obj = json.loads(line) if line is not None else None
    except (OSError, UnicodeDecodeError, EOFError, json.JSONDecodeError) as e:
        raise DataError(str(p), "line 1", None, f"not a JSONL manifest: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(str(p), "line 1", None, "empty file" if obj is None else "expected a JSON object")
    return obj


def _partner(p: Path, mine: str, other: str, strict: bool = True) -> Path | None:
    q = p.with_name(p.name.replace(mine, other))
    if q != p and q.is_file():
        return q
    if strict:
        raise DataError(str(p), message=f"lhotse {mine} manifest without its {other} manifest ({q.name})")
    return None


def _from_lhotse(p: Path, recordings: Path | None, supervisions: Path | None) -> list[AsrItem]:
    try:
        import lhotse  # (imports torch: only when a lhotse manifest is read)
    except ImportError:
        raise SpokenTODError(f"{p}: reading lhotse manifests needs lhotse (pip install lhotse)") from None
    try:  # → (recording, its supervisions, their time offset in the recording, record id)
        if recordings is None:
            groups = [(getattr(c, "recording", None), c.supervisions, getattr(c, "start", 0.0), c.id)
                      for c in lhotse.CutSet.from_file(p)]
        else:
            recs = {r.id: r for r in lhotse.RecordingSet.from_file(recordings)}
            groups = [(recs.get(s.recording_id), [s], 0.0, s.id)
                      for s in lhotse.SupervisionSet.from_file(supervisions)]
    except Exception as e:  # noqa: BLE001 - lhotse's own errors name no file
        raise DataError(str(p), message=f"lhotse cannot read it: {type(e).__name__}: {e}") from None
    items, problems = [], []
    for rec, sups, offset, rid in groups:
        if rec is None or len(rec.sources) != 1 or rec.sources[0].type != "file":
            problems.append(Problem(str(p), rid, "recording", "needs a recording with one file source"))
            continue
        audio = Path(rec.sources[0].source)
        audio = (audio if audio.is_absolute() else p.parent / audio).resolve()
        for s in sups:
            start, end = offset + s.start, offset + s.end
            if start > _WHOLE_TOL_S or end < rec.duration - _WHOLE_TOL_S:
                problems.append(Problem(str(p), s.id, "start", f"covers {start:.2f}-{end:.2f} s of a "
                                        f"{rec.duration:.2f} s recording; cut segments into files first"))
                continue
            item = AsrItem(s.id, str(audio), s.text, s.duration)
            if why := _unusable(item):
                problems.append(Problem(str(p), s.id, None, why))
            else:
                items.append(item)
    return _finish(p, items, problems)


def _unusable(item: AsrItem) -> str | None:
    if not Path(item.audio).is_file():
        return f"audio file {item.audio} does not exist"
    return None if (item.text or "").strip() else "no transcript text"


def _finish(p: Path, items: list[AsrItem], problems: list[Problem]) -> list[AsrItem]:
    if problems:
        raise DataError.many(problems)
    if not items:
        raise DataError(str(p), message="no items with audio")
    return items
