"""``spokentod data validate``: list every problem in a manifest or corpus, with file, record and field.

Structure and schema come from the lenient readers (every bad line is reported, none stops the run);
then dialogue-level checks (duplicate ids); then each turn's audio file. Audio is checked cheaply first
(path fence, magic bytes, soundfile header, WAV chunk sizes) and decoded in full only when the header
was readable, for the silence and truncation checks that need the samples.
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from spokentod.data import corpora
from spokentod.data.manifest import iter_manifest_lines, resolve_audio_path
from spokentod.data.schema import Audio, Dialogue
from spokentod.errors import DataError, Problem
from spokentod.progress import progress_bar

PROGRESS_ABOVE = 200  # files; below this a progress bar is just noise
# What reading a bad file raises: LibsndfileError (a RuntimeError) for corrupt or unknown data,
# OSError for I/O, ValueError/TypeError for headers soundfile cannot map to its enums.
SOUNDFILE_ERRORS = (RuntimeError, OSError, ValueError, TypeError)


@dataclass(frozen=True)
class Limits:
    min_seconds: float = 0.05
    max_seconds: float = 600.0
    duration_tolerance: float = 0.1  # s between Audio.duration and the file (mp3 encoder padding ~50 ms)
    silence_rms: float = 1e-4  # -80 dBFS: only digital silence or dither, never quiet speech
    decode: bool = True  # full decode for silence / truncation; False = headers only


# Suffix → the content kind _sniff must find. Unknown suffixes are not judged by content.
SUFFIX_KIND = {".wav": "wav", ".flac": "flac", ".ogg": "ogg", ".oga": "ogg", ".opus": "ogg",
               ".mp3": "mp3", ".aif": "aiff", ".aiff": "aiff"}


@dataclass
class _Job:
    file: str
    record: str
    field: str  # e.g. "turns.3.audio"
    base: Path
    audio: Audio
    order: int  # the record's position in the file: the report lists problems record by record


def validate_path(path: str | os.PathLike, corpus: str | None = None, root: str | os.PathLike | None = None,
                  limits: Limits | None = None, workers: int | None = None) -> list[Problem]:
    """Every problem in a manifest (.jsonl) or a corpus file/directory; [] when it is clean.

    Relative audio paths resolve against the manifest's folder (a corpus directory: itself); every audio
    file must lie inside `root` (default: that folder)."""
    path = Path(path)
    if not path.exists():
        return [Problem(str(path), None, None, "path does not exist")]
    found: list[tuple[int, Problem]] = []  # (record position, problem); -1 = the file as a whole
    if corpus is None and path.is_file() and path.name.endswith(".jsonl"):
        records, jobs = _read_manifest(path, found)
    else:
        records, jobs = _read_corpus(path, corpus, found)
    found += _duplicate_ids(str(path), records)
    found += _check_jobs(jobs, root, limits or Limits(), workers)
    found.sort(key=lambda x: x[0])  # stable: within a record, schema → duplicate id → audio
    return [p for _, p in found]


def _read_manifest(path: Path, found: list[tuple[int, Problem]]):
    records: list[tuple[str, str, int]] = []  # (dialogue id, record, position) of lines with an id
    jobs: list[_Job] = []
    try:
        lines = list(iter_manifest_lines(path))
    except DataError as e:
        found += [(-1, p) for p in e.problems]
        return records, jobs
    for line in lines:
        found += [(line.lineno, p) for p in line.problems]
        obj = line.obj if isinstance(line.obj, dict) else {}
        if isinstance(obj.get("id"), str):
            records.append((obj["id"], line.record, line.lineno))
        if line.dialogue is not None:
            jobs += _audio_jobs(str(path), line.record, path.parent, line.dialogue, line.lineno)
        else:  # schema-invalid line: still check the audio it names, so one run lists everything
            turns = obj.get("turns") if isinstance(obj.get("turns"), list) else []
            for i, t in enumerate(turns):
                if isinstance(t, dict) and isinstance(t.get("audio"), dict):
                    try:
                        audio = Audio.model_validate(t["audio"])
                    except ValueError:
                        continue  # its schema problem is already listed
                    jobs.append(_Job(str(path), line.record, f"turns.{i}.audio", path.parent, audio, line.lineno))
    return records, jobs


def _read_corpus(path: Path, corpus: str | None, found: list[tuple[int, Problem]]):
    problems: list[Problem] = []
    try:
        dialogues = corpora.load(corpus, path, lenient=True, problems=problems)
    except DataError as e:
        dialogues = []
        problems += e.problems
    except KeyError as e:  # unknown corpus name
        dialogues = []
        problems.append(Problem(str(path), None, None, str(e.args[0] if e.args else e)))
    found += [(-1, p) for p in problems]  # loaders report skipped records, not their positions
    base = path if path.is_dir() else path.parent
    records = [(d.id, d.id, n) for n, d in enumerate(dialogues)]
    jobs = [j for n, d in enumerate(dialogues) for j in _audio_jobs(str(path), d.id, base, d, n)]
    return records, jobs


def _audio_jobs(file: str, record: str, base: Path, d: Dialogue, order: int) -> list[_Job]:
    return [_Job(file, record, f"turns.{i}.audio", base, t.audio, order) for i, t in enumerate(d.turns) if t.audio]


def _duplicate_ids(file: str, records: list[tuple[str, str, int]]) -> list[tuple[int, Problem]]:
    first: dict[str, str] = {}
    out = []
    for did, record, order in records:
        if did in first:
            out.append((order, Problem(file, record, "id", f"duplicate dialogue id {did!r} (first at {first[did]})")))
        else:
            first[did] = record
    return out


def _check_jobs(jobs: list[_Job], root, limits: Limits, workers: int | None) -> list[tuple[int, Problem]]:
    def run(job: _Job) -> list[tuple[int, Problem]]:
        return [(job.order, Problem(job.file, job.record, f"{job.field}.{sub}", msg))
                for sub, msg in audio_problems(job.audio, job.base, root, limits)]

    if not jobs:
        return []
    workers = workers or min(8, os.cpu_count() or 2)
    with ThreadPoolExecutor(workers) as pool:  # libsndfile and file I/O release the GIL
        results = pool.map(run, jobs)  # map keeps the jobs' order, so the report is deterministic
        if len(jobs) > PROGRESS_ABOVE:
            results = _with_progress(results, len(jobs))
        return [p for ps in results for p in ps]


def _with_progress(results, total: int):
    with progress_bar("checking audio", transient=True) as bar:
        task = bar.add_task("checking audio", total=total)
        for r in results:
            bar.advance(task)
            yield r


def audio_problems(audio: Audio, base: str | os.PathLike, root: str | os.PathLike | None = None,
                   limits: Limits | None = None) -> list[tuple[str, str]]:
    """Problems with one turn's audio as (sub-field, message), sub-field being path/sample_rate/duration."""
    lim = limits or Limits()
    try:
        file = resolve_audio_path(base, audio.path, root)
    except ValueError as e:
        return [("path", str(e))]
    if not file.is_file():
        return [("path", f"file not found: {file}" if not file.exists() else f"not a regular file: {file}")]
    out: list[tuple[str, str]] = []
    try:
        with file.open("rb") as f:
            head = f.read(64)
    except OSError as e:
        return [("path", f"cannot read {file}: {e.strerror or e}")]
    kind, expected = _sniff(head), SUFFIX_KIND.get(file.suffix.lower())
    if expected and kind != expected:  # e.g. SpokenWOZ's MP3s named .wav
        out.append(("path", f"content is {kind or 'no known audio format'}, but the name says {file.suffix}"))
    try:
        info = sf.info(str(file))
    except SOUNDFILE_ERRORS as e:
        return out + [("path", f"unreadable by soundfile: {e}")]
    if info.samplerate != audio.sample_rate:
        out.append(("sample_rate", f"file is {info.samplerate} Hz, manifest says {audio.sample_rate} Hz"))
    frames = info.frames
    if kind == "wav":  # libsndfile silently clamps a too-long data chunk, so read the header ourselves
        sizes = _wav_frames(file)
        if sizes and sizes[0] > sizes[1]:
            out.append(("path", f"truncated WAV: header declares {sizes[0]} frames, file holds {sizes[1]}"))
    # decode only what headers could not settle; an overlong file is reported below without the cost
    if lim.decode and 0 < frames <= lim.max_seconds * info.samplerate:
        decoded, rms, err = _decode_stats(file)
        if err is not None:  # corrupt mid-stream: nothing below would mean anything
            return out + [("path", f"decoding failed after {decoded} of {frames} frames: {err}")]
        if decoded < frames - info.samplerate // 100:  # >10 ms short: compressed file cut off
            out.append(("path", f"truncated: decoded {decoded} frames, header declares {frames}"))
        elif rms < lim.silence_rms:
            out.append(("path", f"audio is silent (RMS {rms:.1e} < {lim.silence_rms:.0e})"))
        frames = min(frames, decoded)
    seconds = frames / info.samplerate
    if frames == 0:
        out.append(("duration", "audio is empty (0 frames)"))
    elif not lim.min_seconds <= seconds <= lim.max_seconds:
        out.append(("duration", f"audio is {seconds:.3f} s, outside [{lim.min_seconds}, {lim.max_seconds}] s"))
    if frames and abs(seconds - audio.duration) > lim.duration_tolerance:
        out.append(("duration", f"file holds {seconds:.3f} s, manifest says {audio.duration:.3f} s"))
    return out


def _sniff(head: bytes) -> str | None:
    """Container kind from magic bytes."""
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:3] == b"ID3":
        return "mp3"
    # MPEG audio frame sync: 11 set bits, then a non-zero layer (layer 00 would be AAC/ADTS)
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "mp3"
    return None


def _wav_frames(file: Path) -> tuple[int, int] | None:
    """(frames the data chunk declares, whole frames the file holds) or None when unknowable
    (RF64, streamed WAVs with a placeholder size, no fmt/data chunk)."""
    size = file.stat().st_size
    with file.open("rb") as f:
        riff = f.read(12)
        if riff[:4] not in (b"RIFF", b"RIFX"):
            return None
        endian = "<" if riff[:4] == b"RIFF" else ">"
        block_align = 0
        for _ in range(64):  # real files have a handful of chunks; bound the walk on garbage
            hdr = f.read(8)
            if len(hdr) < 8:
                return None
            cid, csize = hdr[:4], struct.unpack(endian + "I", hdr[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(min(csize, 16))
                if len(fmt) < 14:
                    return None
                block_align = struct.unpack(endian + "H", fmt[12:14])[0]
                f.seek(csize - len(fmt) + (csize & 1), os.SEEK_CUR)
            elif cid == b"data":
                if not block_align or csize in (0, 0xFFFFFFFF):
                    return None
                return csize // block_align, (size - f.tell()) // block_align
            else:
                f.seek(csize + (csize & 1), os.SEEK_CUR)
    return None


def _decode_stats(file: Path, block: int = 1 << 16) -> tuple[int, float, str | None]:
    """(frames decoded, RMS over all channels, error or None), streamed so a 10-minute file stays small."""
    frames, sumsq, count = 0, 0.0, 0
    try:
        with sf.SoundFile(str(file)) as snd:
            # not snd.blocks(): it trusts the header's frame count and re-yields stale buffer contents
            # when a cut-off file runs dry; read() returns only what was actually decoded
            while len(chunk := snd.read(block, dtype="float32", always_2d=True)):
                frames += len(chunk)
                sumsq += float(np.square(chunk, dtype=np.float64).sum())
                count += chunk.size
    except SOUNDFILE_ERRORS as e:
        return frames, 0.0, str(e)
    return frames, (sumsq / count) ** 0.5 if count else 0.0, None
