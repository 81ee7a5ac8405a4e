"""SpokenWOZ (released JSON + per-dialogue recordings) → Dialogues.

Release layout: ``text_5700_train_dev/data.json`` (+ ``valListFile.json``), ``text_5700_test/data.json``,
``audio_5700_train_dev/<id>.wav`` and ``audio_5700_test/<id>.wav`` — one stereo recording per dialogue.
``data.json`` is MultiWOZ 2.1-shaped (``{id: {goal, log}}``, states in the system turns' ``metadata``)
with, per turn, ``tag`` ("user"/"system") and ``words``: the ASR words with begin/end times in
milliseconds, a channel and an index. The multiwoz21 conversion is reused as is (same slot naming; the
extra ``profile`` domain keeps SpokenWOZ's names: ``profile-name`` → ``{"profile": {"name": ...}}``).

Per turn, ``metadata["words"]`` = ``[{"word", "begin", "end", "channel"?, "index"?}]`` with times in
*seconds*, and ``metadata["audio_span"]`` = ``[first begin, last end]``: where the turn lies in the
dialogue recording. Word keys are matched loosely (``Word``/``BeginTime``/``EndTime`` as in the release,
``word``/``begin_time``/``channel_id``/``word_index`` as in its README).

Audio: ``load(path, audio_dir=...)``; by default the recordings are looked for beside the text
(``text_X`` → ``audio_X``, or an ``audio`` folder next to or above ``data.json``); ``audio_dir=False``
skips them. When a recordings folder is used, each dialogue gets ``metadata["audio"]`` =
``Audio(path, sample_rate, duration)`` (as a dict) and a dialogue without its ``<id>.wav`` is an error
(strict) or a reported problem (lenient). ``path``: a ``data.json``, a ``text_*`` folder, or the root
holding the ``text_*`` folders.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import soundfile as sf

from spokentod.data.corpora import corpus
from spokentod.data.corpora import multiwoz21 as mwz
from spokentod.data.corpora._util import convert_records, read_json
from spokentod.data.schema import Audio, Dialogue
from spokentod.errors import DataError, Problem

_WORD_KEYS = {
    "word": "word",
    "wordcontext": "word",
    "begintime": "begin",
    "begin": "begin",
    "start": "begin",
    "endtime": "end",
    "end": "end",
    "channel": "channel",
    "channelid": "channel",
    "index": "index",
    "wordindex": "index",
}


def _word(w: Any, file: str, record: str, field: str) -> dict[str, Any]:
    if not isinstance(w, dict):
        raise DataError(file, record, field, "expected a word object")
    out: dict[str, Any] = {}
    for k, v in w.items():
        if key := _WORD_KEYS.get(k.lower().replace("_", "")):
            out[key] = v
    for key in ("word", "begin", "end"):
        if key not in out:
            raise DataError(file, record, field, f"word has no {key} (keys: {sorted(w)})")
    try:
        out["begin"], out["end"] = round(float(out["begin"]) / 1000, 3), round(float(out["end"]) / 1000, 3)
    except (TypeError, ValueError):
        raise DataError(file, record, field, "begin/end times are not numbers") from None
    return out


def audio_info(wav: Path, file: str, record: str) -> dict[str, Any]:
    if not wav.is_file():
        raise DataError(file, record, "audio", f"recording not found: {wav}")
    try:
        info = sf.info(str(wav))
    except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise DataError(file, record, "audio", f"unreadable recording {wav}: {e}") from None
    return Audio(path=str(wav.resolve()), sample_rate=info.samplerate, duration=info.duration).model_dump(
        exclude_none=True
    )


def convert(file: str, audio_dir: Path | None, record: str, raw: Any) -> Dialogue:
    d = mwz.convert(file, record, raw, source="spokenwoz")
    log = raw["log"]
    dropped = set(d.metadata.get("empty_turns_dropped", []))
    for turn, i in zip(d.turns, [i for i in range(len(log)) if i not in dropped]):
        words = log[i].get("words")
        if words is None:
            continue
        if not isinstance(words, list):
            raise DataError(file, record, f"log.{i}.words", "expected a list of words")
        ws = [_word(w, file, record, f"log.{i}.words.{k}") for k, w in enumerate(words)]
        turn.metadata["words"] = ws
        if ws:
            turn.metadata["audio_span"] = [min(w["begin"] for w in ws), max(w["end"] for w in ws)]
    if audio_dir is not None:
        d.metadata["audio"] = audio_info(audio_dir / f"{d.id}.wav", file, record)
    return d


def _annotation_files(p: Path) -> list[Path]:
    if p.is_file():
        return [p]
    files = [p / "data.json"] if (p / "data.json").is_file() else sorted(p.glob("text_*/data.json"))
    if not files:
        raise DataError(str(p), message="no SpokenWOZ data.json here or in text_*/ folders")
    return files


def find_audio_dir(data_json: Path) -> Path | None:
    parent = data_json.parent
    candidates = [parent.with_name("audio_" + parent.name[5:])] if parent.name.startswith("text_") else []
    candidates += [parent / "audio", parent.parent / "audio"]
    return next((c for c in candidates if c.is_dir()), None)


def _detect(p: Path) -> bool:
    try:
        return all(mwz.is_mwz21_file(f, words=True) for f in _annotation_files(p))
    except DataError:
        return False


@corpus("spokenwoz", detect=_detect, multiphase=False)
def load(
    path: str | os.PathLike,
    lenient: bool = False,
    problems: list[Problem] | None = None,
    audio_dir: str | os.PathLike | bool | None = None,
) -> list[Dialogue]:
    """SpokenWOZ annotations (+ recordings; see the module doc for how they are found)."""
    out: list[Dialogue] = []
    for file in _annotation_files(Path(path)):
        if audio_dir is False:
            audio = None
        elif audio_dir is None or audio_dir is True:
            audio = find_audio_dir(file)
        else:
            audio = Path(audio_dir)
            if not audio.is_dir():
                raise DataError(str(audio), message="audio_dir is not a directory")
        data = read_json(file)
        if not isinstance(data, dict):
            raise DataError(str(file), message="expected a JSON object {dialogue_id: {goal, log}}")
        out += convert_records(str(file), data.items(), partial(convert, str(file), audio), lenient, problems)
    return out
