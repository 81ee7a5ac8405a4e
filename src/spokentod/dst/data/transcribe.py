"""A dialogue manifest whose user turns read as an ASR heard them: the training data of a cascade tracker that
learns from the errors it will meet at test time, instead of from gold text it never sees there.

Every user turn with audio is transcribed by an ASR backend; its ``text`` becomes the transcript, and the gold
text moves to ``metadata.text_gold``. States, agent turns and audio stay as they are, so the new manifest trains
and tracks like the original. It is written beside the original (its audio paths are relative to that folder)
with a JSON sidecar: the ASR's identity, the counts, the WER against the gold text, and every failed call.
A failed call leaves the turn's text empty with ``metadata.asr_error`` — never the gold text.

    spokentod dst transcribe runs/dst/repro/data/source_train/manifest.jsonl \\
        --asr '{"name": "whisper-ct2", "model": "base", "language": "en"}' --name whisper-base
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from spokentod.atomic import write_json
from spokentod.data.manifest import read_manifest, resolve_audio_path, write_manifest
from spokentod.errors import SpokenTODError
from spokentod.progress import progress_bar


def transcribed_path(manifest: Path, name: str) -> Path:
    """Where the transcribed copy of `manifest` goes: beside it, as manifest.<name>.jsonl."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SpokenTODError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (it becomes a file name)")
    return manifest.with_name(f"{manifest.stem}.{name}.jsonl")


def hear(asr: Any, audio: str) -> tuple[str, str | None]:
    """One ASR call: (transcript, None), or ("", the error naming the file): a failed call never yields gold
    text. Shared with the cascade's transcription at tracking time (dst/infer/track.py)."""
    try:
        return asr.transcribe(audio).text.strip(), None
    except Exception as e:  # noqa: BLE001 - the caller records it, the run goes on
        return "", f"asr: {type(e).__name__}: {e} ({audio})"


def transcribe_manifest(manifest: str | Path, asr: Any, name: str, progress: bool = True) -> dict[str, Any]:
    """Write manifest.<name>.jsonl (user turns as `asr` hears them) and manifest.<name>.json (its record).

    `asr` is an ASR backend (``.transcribe(path).text``; wrap it in ``backends.cache.cached`` to make a rerun
    cheap). Returns the record. Raises SpokenTODError if no user turn has audio."""
    import jiwer

    from spokentod.dst.score.wer import _wer_norm

    manifest = Path(manifest)
    out = transcribed_path(manifest, name)
    dialogues = list(read_manifest(manifest))
    base = manifest.resolve().parent
    todo = [(d, t) for d in dialogues for t in d.turns if t.speaker.value == "user" and t.audio]
    if not todo:
        raise SpokenTODError(f"{manifest}: no user turn has audio: nothing to transcribe")
    failed: dict[str, str] = {}
    refs: list[str] = []
    hyps: list[str] = []
    with progress_bar("transcribing", unit="turns", disable=not progress) as bar:
        task = bar.add_task(name, total=len(todo))
        for d, t in todo:
            gold, key = t.text, f"{d.id}:{t.index}"
            try:
                text, error = hear(asr, str(resolve_audio_path(base, t.audio.path)))
            except ValueError as e:  # the path escapes the manifest's folder
                text, error = "", str(e)
            t.text = text
            t.metadata = {**t.metadata, "text_gold": gold}
            if error:
                failed[key] = t.metadata["asr_error"] = error
            else:
                refs.append(" ".join(_wer_norm(gold)) or "<empty>")
                hyps.append(" ".join(_wer_norm(text)))
            bar.advance(task)
    n = write_manifest(out, dialogues)
    identity = asr.identity() if hasattr(asr, "identity") else {"name": type(asr).__name__}
    record = {"source": str(manifest), "manifest": str(out), "name": name, "asr": identity,
              "dialogues": n, "user_turns": len(todo), "failed": len(failed),
              "wer": jiwer.wer(refs, hyps) if refs else None, "failures": failed}
    write_json(out.with_suffix(".json"), record)
    return record
