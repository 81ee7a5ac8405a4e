"""Export a manifest as lhotse ``recordings.jsonl`` + ``supervisions.jsonl`` (no lhotse import needed).

Field names follow lhotse's Recording / AudioSource / SupervisionSegment dicts (lhotse 1.x):
Recording ``{id, sources: [{type: "file", channels, source}], sampling_rate, num_samples, duration}``;
SupervisionSegment ``{id, recording_id, start, duration, channel, text, speaker, custom}``.
One recording per turn audio file, one supervision covering it. The state goes into ``custom`` as a JSON
*string*: lhotse tries to deserialize dict values in ``custom`` as array/image manifests on load.
"""

from __future__ import annotations

import gzip as gz
import json
import os
from pathlib import Path

import soundfile as sf

from spokentod.atomic import atomic_write
from spokentod.data.manifest import read_manifest, resolve_audio_path
from spokentod.data.validate import SOUNDFILE_ERRORS
from spokentod.errors import DataError, Problem


class ExportResult(dict):
    """``{"recordings": Path, "supervisions": Path}``, plus the counts as attributes."""

    def __init__(self, paths: dict[str, Path], dialogues: int, recordings: int, skipped_no_audio: int):
        super().__init__(paths)
        self.dialogues, self.recordings, self.skipped_no_audio = dialogues, recordings, skipped_no_audio

    def summary(self) -> str:
        return (f"{self.recordings} recordings and supervisions from {self.dialogues} dialogues; "
                f"{self.skipped_no_audio} turns without audio skipped")


def export_lhotse(manifest: str | os.PathLike, out_dir: str | os.PathLike, gzip: bool = False,
                  root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write the two lhotse manifests; returns an ExportResult (a dict of their paths, with counts).

    Strict: a bad manifest line or a turn whose audio is missing, unreadable or outside `root` raises
    DataError listing every such turn (``spokentod data validate`` explains them in detail); nothing is
    written then. Audio paths in the output are absolute, so the files work from any directory.
    """
    manifest, out_dir = Path(manifest), Path(out_dir)
    recordings, supervisions, problems = [], [], []
    seen: set[str] = set()
    n_dialogues = skipped = 0
    for d in read_manifest(manifest):
        n_dialogues += 1
        if d.id in seen:  # recording ids would collide
            problems.append(Problem(str(manifest), d.id, "id", "duplicate dialogue id"))
        seen.add(d.id)
        for t in d.turns:
            if t.audio is None:
                skipped += 1
                continue
            field = f"turns.{t.index}.audio.path"
            try:
                path = resolve_audio_path(manifest.parent, t.audio.path, root)
            except ValueError as e:  # outside the root
                problems.append(Problem(str(manifest), d.id, field, str(e)))
                continue
            try:
                info = sf.info(str(path))  # the file, not the manifest, is the truth lhotse must see
            except SOUNDFILE_ERRORS as e:
                problems.append(Problem(str(manifest), d.id, field, f"unreadable audio: {e}"))
                continue
            rid = f"{d.id}_{t.index:03d}"
            channels = list(range(info.channels))
            duration = info.frames / info.samplerate
            recordings.append({"id": rid, "sources": [{"type": "file", "channels": channels, "source": str(path)}],
                               "sampling_rate": info.samplerate, "num_samples": info.frames,
                               "duration": duration})
            custom = {"dialogue_id": d.id, "turn": t.index, "role": t.speaker.value, "source": d.source}
            if t.phase is not None:
                custom["phase"] = t.phase.value
            if t.state is not None:
                custom["state"] = json.dumps(t.state, ensure_ascii=False, sort_keys=True)
            if d.intent is not None:
                custom["intent"] = d.intent.type
            # lhotse's `speaker` is a speaker identity: the TTS voice when known, else the role
            supervisions.append({"id": rid, "recording_id": rid, "start": 0.0, "duration": duration,
                                 "channel": channels[0] if len(channels) == 1 else channels,
                                 "text": t.text, "speaker": t.audio.voice or t.speaker.value,
                                 "custom": custom})
    if problems:
        raise DataError.many(problems)
    ext = ".jsonl.gz" if gzip else ".jsonl"
    paths = {"recordings": out_dir / f"recordings{ext}", "supervisions": out_dir / f"supervisions{ext}"}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(paths["recordings"], recordings)
    _write_jsonl(paths["supervisions"], supervisions)
    return ExportResult(paths, n_dialogues, len(recordings), skipped)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    if not path.name.endswith(".gz"):
        atomic_write(path, data)  # no half-written manifest on a crash
        return

    def write_gz(f) -> None:
        # filename= names the member after the target, not the temporary file
        with gz.GzipFile(filename=path.name, mode="wb", fileobj=f) as z:
            z.write(data)

    atomic_write(path, write_gz)
