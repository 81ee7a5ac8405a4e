"""DSTC11 Speech-Aware MultiWOZ → Dialogues whose user turns carry audio.

DSTC11 Track 3 (storage.googleapis.com/gresearch/dstc11) spoke MultiWOZ 2.1's *user* turns (TTS-Verbatim,
Human-Verbatim, Human-Paraphrased); agent turns stay written. Its audio ships as ``.hd5`` files that the
community recipes (SpeechBrain, Orange dst-e2e) extract to one WAV per user turn::

    <audio root>/<dialogue id>/Turn-<turn_id>.wav

``turn_id`` is the 1-based position in the dialogue, so user turns are odd (``Turn-1``, ``Turn-3``, ...)
and MultiWOZ log index ``i`` is ``Turn-<i+1>``. Annotations come in either form:

- the DSTC11 manifest (``.txt``), one line per turn::

      line_nr: 0 dialog_id: sng0073.json turn_id: 1 text: user: i would like a taxi ... state: taxi-destination=pizza hut fenditton; taxi-departure=saint johns college

  lower-cased; agent lines have an empty state. Its dev/test sets carry DSTC11's replaced slot values and
  12-hour times, so for DSTC11 audio the manifest, not MultiWOZ 2.1, is the matching annotation.
  Ids are upper-cased back to MultiWOZ's (``sng0073.json`` → ``SNG0073``);
- a MultiWOZ 2.1-format JSON (ConvLab-2 ``val.json`` ...), e.g. for audio you rendered yourself with the
  same ``Turn-<i+1>.wav`` naming. Converted by multiwoz21, so texts and states are identical to it.

``load(path, audio_dir=None)``: ``path`` is the annotation file, or a directory holding exactly one
annotation file and the per-dialogue audio folders. The audio root is ``audio_dir``, else the
annotation file's folder; dialogue folders match case-insensitively, with or without ``.json``. Every
user turn gets ``Audio(path, sample_rate, duration)``; a missing or unreadable file is an error (strict)
or a reported problem that skips the dialogue (lenient). States use the multiwoz21 slot naming
(DSTC11's ``restaurant-time`` → ``{"restaurant": {"book time": ...}}``).
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path
from typing import Any

import soundfile as sf

from spokentod.data.corpora import corpus
from spokentod.data.corpora import multiwoz21 as mwz
from spokentod.data.corpora._util import convert_records, read_json
from spokentod.data.schema import Audio, Dialogue, Speaker, State, Turn
from spokentod.data.text import read_head
from spokentod.errors import DataError, Problem

_LINE = re.compile(
    r"line_nr:\s*\d+\s+dialog_id:\s*(\S+)\s+turn_id:\s*(\d+)\s+text:\s*(user|agent):\s?(.*)", re.DOTALL
)


def wav_name(turn_id: int) -> str:
    return f"Turn-{turn_id}.wav"


def is_manifest(p: Path) -> bool:
    return p.is_file() and read_head(p, 200).lstrip().startswith("line_nr:")


def parse_state(s: str, file: str, record: str, field: str) -> State:
    """``"taxi-leaveat=0:47 am; restaurant-time=2:12 am"`` → ``{"taxi": {"leaveat": ...}, "restaurant": {"book time": ...}}``."""
    state: State = {}
    for item in s.split(";"):
        if not item.strip():
            continue
        name, eq, value = item.partition("=")
        if not eq:
            raise DataError(file, record, field, f"state item {item.strip()!r} is not domain-slot=value")
        try:
            domain, slot = mwz.split_slot(name.strip())
        except ValueError as e:
            raise DataError(file, record, field, str(e)) from None
        mwz.add_slot(state, domain, slot, mwz.canonical_value(value, file, record, field))
    return state


def read_manifest_rows(file: Path) -> dict[str, list[dict[str, Any]]]:
    """Manifest lines grouped by dialogue id, in file order. A line that does not parse is kept as an
    error row of its dialogue (so lenient loading skips that dialogue only)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with file.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("END_OF_DIALOG"):
                continue
            m = _LINE.fullmatch(line)
            if m is None:
                did = re.search(r"dialog_id:\s*(\S+)", line)
                if did is None:
                    raise DataError(str(file), f"line {lineno}", None, "not a DSTC11 manifest line")
                out.setdefault(did.group(1), []).append(
                    {"line": lineno, "error": "not a DSTC11 manifest line"}
                )
                continue
            did, tid, who, rest = m.groups()
            text, sep, state = rest.rpartition("state:")
            if not sep:
                text, state = rest, ""
            out.setdefault(did, []).append(
                {
                    "line": lineno,
                    "turn_id": int(tid),
                    "speaker": who,
                    "text": text.strip(),
                    "state": state.strip(),
                }
            )
    return out


class AudioIndex:
    """Per-dialogue audio folders under one root, matched case-insensitively (built once)."""

    def __init__(self, root: Path):
        self.root = root
        self.dirs = {d.name.lower().removesuffix(".json"): d for d in root.iterdir() if d.is_dir()}

    def attach(self, d: Dialogue, turn_ids: list[int], file: str, record: str) -> None:
        folder = self.dirs.get(d.id.lower())
        for turn, tid in zip(d.turns, turn_ids):
            if turn.speaker != Speaker.user:
                continue
            wav = (folder or self.root / d.id) / wav_name(tid)
            if not wav.is_file():
                raise DataError(file, record, f"turns.{turn.index}.audio", f"audio file not found: {wav}")
            try:
                info = sf.info(str(wav))
            except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
                raise DataError(
                    file, record, f"turns.{turn.index}.audio", f"unreadable audio {wav}: {e}"
                ) from None
            turn.audio = Audio(path=str(wav.resolve()), sample_rate=info.samplerate, duration=info.duration)


def convert_manifest(file: str, audio: AudioIndex, record: str, rows: list[dict[str, Any]]) -> Dialogue:
    bad = next((r for r in rows if "error" in r), None)
    if bad is not None:
        raise DataError(file, record, f"line {bad['line']}", bad["error"])
    rows = sorted(rows, key=lambda r: r["turn_id"])
    if [r["turn_id"] for r in rows] != list(range(1, len(rows) + 1)):
        raise DataError(
            file, record, "turn_id", f"turn ids are not 1..{len(rows)}: {[r['turn_id'] for r in rows]}"
        )
    turns = []
    for r in rows:
        user = r["speaker"] == "user"
        if user != (r["turn_id"] % 2 == 1):
            raise DataError(file, record, f"line {r['line']}", "user turns must have odd turn ids")
        if not r["text"]:
            raise DataError(file, record, f"line {r['line']}", "empty utterance")
        state = parse_state(r["state"], file, record, f"line {r['line']}.state") if user else None
        turns.append(
            Turn(
                index=r["turn_id"] - 1,
                speaker=Speaker.user if user else Speaker.agent,
                text=r["text"],
                state=state,
                metadata={"line": r["line"]},
            )
        )
    d = Dialogue(
        id=record.removesuffix(".json").upper(),
        source="speech-aware-multiwoz",
        turns=turns,
        metadata={"original_id": record, "annotation": "dstc11-manifest"},
    )
    audio.attach(d, [r["turn_id"] for r in rows], file, record)
    return d


def convert_json(file: str, audio: AudioIndex, record: str, raw: Any) -> Dialogue:
    d = mwz.convert(file, record, raw, source="speech-aware-multiwoz")
    dropped = set(d.metadata.get("empty_turns_dropped", []))
    log_indices = [i for i in range(len(raw["log"])) if i not in dropped]
    d.metadata["annotation"] = "multiwoz21"
    audio.attach(d, [i + 1 for i in log_indices], file, record)
    return d


def _annotation(p: Path) -> Path:
    if p.is_file():
        return p
    found = [f for f in sorted(p.glob("*.txt")) if is_manifest(f)] + [
        f for f in sorted(p.glob("*.json")) if mwz.is_mwz21_file(f)
    ]
    if len(found) != 1:
        raise DataError(
            str(p),
            message=f"expected exactly one annotation file (DSTC11 manifest .txt or MultiWOZ "
            f"2.1 .json) beside the audio folders, found {[f.name for f in found]}",
        )
    return found[0]


def _detect(p: Path) -> bool:
    if p.is_file():
        return is_manifest(p)
    if not p.is_dir() or next(p.glob("*/Turn-*.wav"), None) is None:
        return False
    try:
        _annotation(p)
        return True
    except DataError:
        return False


@corpus("speech-aware-multiwoz", detect=_detect, multiphase=False)
def load(
    path: str | os.PathLike,
    lenient: bool = False,
    problems: list[Problem] | None = None,
    audio_dir: str | os.PathLike | None = None,
) -> list[Dialogue]:
    """Annotations (DSTC11 manifest or MultiWOZ 2.1 JSON) joined with per-user-turn WAVs."""
    file = _annotation(Path(path))
    root = Path(audio_dir) if audio_dir is not None else file.parent
    if not root.is_dir():
        raise DataError(str(root), message="audio directory does not exist")
    audio = AudioIndex(root)
    if is_manifest(file):
        rows = read_manifest_rows(file)
        return convert_records(
            str(file), rows.items(), partial(convert_manifest, str(file), audio), lenient, problems
        )
    data = read_json(file)
    if not isinstance(data, dict):
        raise DataError(str(file), message="expected a DSTC11 manifest or a MultiWOZ 2.1 JSON object")
    return convert_records(
        str(file), data.items(), partial(convert_json, str(file), audio), lenient, problems
    )
