"""Spoken-corpus builder: render the turns of a manifest to speech with an embedded TTS.

Output layout (all paths in the manifest are relative to `out_dir`):
    <out>/audio/<dialogue_id>/<turn_index:03d>_<speaker>.wav   16-bit mono WAV at `rate` (16 kHz)
    <out>/manifest.jsonl   every dialogue, rendered turns carry Turn.audio (path, rate, duration, voice)
    <out>/synth.json       the settings the audio was made with (TTS identity, voices, rate)

Dialogue ids become directory names: characters outside [A-Za-z0-9._-] turn into "_", leading dots are
dropped, and a changed id gets a short hash of the original so two ids never share a directory; the
result is checked to stay inside <out>/audio.

Voices: one voice per dialogue, `voices[sha256(dialogue_id) mod len(voices)]` over the sorted voice
list. It depends only on the id and the voice list, so a resumed run, a subset or a reordered manifest
gives every dialogue the same voice again.

Resume: a turn whose WAV exists, reads, has frames and the right rate is skipped (files are written
atomically, so a crash leaves no half file); delete a WAV to have it re-rendered. Re-using an out dir with
a different TTS, voice list or rate is refused (synth.json differs) rather than mixing voices.

Turns not rendered keep the audio the input manifest gave them (relative paths rebased onto `out_dir`).

Failures: a turn the TTS cannot render is reported (dialogue, turn, error) and the run goes on; the
manifest is still written (those turns without audio), then SynthError says how many failed, so the CLI
exits non-zero and a rerun retries exactly them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import soundfile as sf
from rich.console import Console

from spokentod.atomic import atomic_write
from spokentod.audio import resample, write_wav
from spokentod.backends.base import create
from spokentod.data.manifest import read_manifest, write_manifest
from spokentod.data.schema import Audio, Dialogue, Speaker
from spokentod.errors import SpokenTODError
from spokentod.progress import progress_bar

SPEAKERS = {"user": (Speaker.user,), "agent": (Speaker.agent,), "all": (Speaker.user, Speaker.agent)}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SynthError(SpokenTODError):
    """Some turns failed to render (`failures`: (dialogue_id, turn_index, message)); the manifest at
    `path` was written without their audio."""

    def __init__(
        self, message: str, path: Path | None = None, failures: list[tuple[str, int, str]] | None = None
    ):
        super().__init__(message)
        self.path, self.failures = path, failures or []


def safe_name(dialogue_id: str) -> str:
    name = _UNSAFE.sub("_", dialogue_id).lstrip(".")[:80] or "_"
    if name != dialogue_id:
        name += "-" + hashlib.sha256(dialogue_id.encode()).hexdigest()[:8]
    return name


def assign_voice(dialogue_id: str, voices: list[str]) -> str:
    return voices[int(hashlib.sha256(dialogue_id.encode()).hexdigest()[:12], 16) % len(voices)]


def turn_path(out_dir: Path, dialogue_id: str, index: int, speaker: Speaker) -> Path:
    audio_root = (out_dir / "audio").resolve()
    path = (audio_root / safe_name(dialogue_id) / f"{index:03d}_{speaker.value}.wav").resolve()
    if path.parent.parent != audio_root:  # belt and braces: safe_name already prevents this
        raise SynthError(f"dialogue id {dialogue_id!r} would write outside {audio_root}")
    return path


def _readable(path: Path, rate: int) -> float | None:
    """Duration of an existing, sound WAV at `rate`, else None (then it is rendered again)."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError):  # missing, truncated or not audio
        return None
    return info.frames / info.samplerate if info.frames > 0 and info.samplerate == rate else None


def _rebase_audio(dialogues: list[Dialogue], src_dir: Path, out_dir: Path) -> None:
    """Audio the input already had (turns we do not render) keeps pointing at the same files."""
    for d in dialogues:
        for t in d.turns:
            if t.audio and not Path(t.audio.path).is_absolute():
                t.audio.path = Path(os.path.relpath(src_dir / t.audio.path, out_dir)).as_posix()


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    path = out_dir / "synth.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k))
            raise SynthError(
                f"{out_dir} was rendered with other settings ({', '.join(diff)} differ; see "
                f"{path}); use a new --out directory or delete it"
            )
    else:
        atomic_write(path, json.dumps(settings, indent=2, sort_keys=True, default=str))  # creates out_dir


def synthesize_manifest(
    manifest: str | os.PathLike | Iterable[Dialogue],
    out_dir: str | os.PathLike,
    tts: str = "kokoro",
    voices: list[str] | None = None,
    speakers: str = "user",
    rate: int = 16000,
    tts_config: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Render the `speakers` turns (user, agent or all) of `manifest` (a JSONL path or Dialogues) into
    `out_dir` with the TTS backend `tts` (+ `tts_config`); returns the path of the new manifest."""
    if speakers not in SPEAKERS:
        raise SynthError(f"speakers must be one of {', '.join(SPEAKERS)}, got {speakers!r}")
    out_dir = Path(out_dir)
    if isinstance(manifest, (str, os.PathLike)):
        dialogues = list(read_manifest(manifest))
        _rebase_audio(dialogues, Path(manifest).parent, out_dir)
    else:  # copies: the caller's dialogues are not modified
        dialogues = [d.model_copy(deep=True) for d in manifest]
    backend = create("tts", {"name": tts, **(tts_config or {})})
    voices = sorted(set(voices or getattr(backend, "voices", None) or [getattr(backend, "voice", "default")]))
    check = getattr(backend, "check_voice", None)
    for v in voices if check else ():
        check(v)  # an unknown voice fails the run now, not once per turn
    identity = {k: v for k, v in backend.identity().items() if k != "voice"}  # the voice is set per turn
    _check_settings(out_dir, {"tts": identity, "voices": voices, "rate": rate})

    jobs = [(d, t) for d in dialogues for t in d.turns if t.speaker in SPEAKERS[speakers]]
    console = Console(stderr=True)
    failures: list[tuple[str, int, str]] = []
    rendered = skipped = 0
    audio_s, t0 = 0.0, time.perf_counter()
    with progress_bar("synth", console=console, disable=not progress) as bar:
        task = bar.add_task("synth", total=len(jobs))
        for d, turn in jobs:
            voice = assign_voice(d.id, voices)
            path = turn_path(out_dir, d.id, turn.index, turn.speaker)
            duration = _readable(path, rate)
            if duration is None:
                try:
                    out = backend.synthesize(turn.text, voice=voice)
                    samples = resample(out.samples, out.rate, rate)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_wav(path, samples, rate)
                    duration = len(samples) / rate
                    rendered += 1
                except Exception as e:  # noqa: BLE001 - any TTS failure: report this turn, keep going
                    turn.audio = None
                    failures.append((d.id, turn.index, f"{type(e).__name__}: {e}"))
                    console.print(
                        f"[red]failed[/red] dialogue {d.id!r} turn {turn.index}: {type(e).__name__}: {e}"
                    )
                    bar.advance(task)
                    continue
            else:
                skipped += 1
            audio_s += duration
            turn.audio = Audio(
                path=path.relative_to(out_dir.resolve()).as_posix(),
                sample_rate=rate,
                duration=round(duration, 4),
                voice=voice,
            )
            bar.advance(task)

    out_manifest = out_dir / "manifest.jsonl"
    write_manifest(out_manifest, dialogues)
    wall = time.perf_counter() - t0
    console.print(
        f"synth: {rendered} rendered, {skipped} already there, {len(failures)} failed; "
        f"{audio_s:.1f} s of audio in {wall:.1f} s"
    )
    if failures:
        raise SynthError(
            f"{len(failures)} of {len(jobs)} turns failed to render (listed above); {out_manifest} "
            f"was written without their audio; run again to retry them",
            out_manifest,
            failures,
        )
    return out_manifest
