"""Spoken-corpus builder on a tiny manifest, with espeak-ng for speed."""

from __future__ import annotations

import pytest
import soundfile as sf

from spokentod.data.manifest import read_manifest, write_manifest
from spokentod.data.schema import Audio, Dialogue, Speaker, make_turns
from spokentod.data.synth import SynthError, assign_voice, safe_name, synthesize_manifest
from spokentod.errors import SpokenTODError

U, A = Speaker.user, Speaker.agent


def _dialogues(first_id: str = "d1") -> list[Dialogue]:
    return [
        Dialogue(
            id=first_id,
            source="test",
            turns=make_turns([(U, "Hi, I need a hotel."), (A, "Sure, where?"), (U, "In the north, please.")]),
        ),
        Dialogue(
            id="d2",
            source="test",
            turns=make_turns([(U, "Book a taxi to the station."), (A, "Done."), (U, "Thanks a lot.")]),
        ),
    ]


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "in.jsonl"
    write_manifest(path, _dialogues())
    return path


def _run(manifest, out, **kw):
    return synthesize_manifest(manifest, out, tts="espeak", progress=False, **kw)


def test_writes_audio_and_manifest(manifest, tmp_path):
    out = tmp_path / "out"
    path = _run(manifest, out)
    assert path == out / "manifest.jsonl"
    dialogues = list(read_manifest(path))
    assert [d.id for d in dialogues] == ["d1", "d2"]
    for d in dialogues:
        voices = {t.audio.voice for t in d.user_turns}
        assert len(voices) == 1  # one voice per dialogue
        for t in d.turns:
            if t.speaker == A:
                assert t.audio is None  # speakers="user" by default
                continue
            assert t.audio.path == f"audio/{d.id}/{t.index:03d}_user.wav"
            info = sf.info(str(out / t.audio.path))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert t.audio.sample_rate == 16000
            assert abs(t.audio.duration - info.frames / 16000) < 1e-3
            assert 0.5 < t.audio.duration < 5


def test_resume_skips_existing_and_rerenders_deleted(manifest, tmp_path):
    out = tmp_path / "out"
    _run(manifest, out)
    wavs = sorted((out / "audio").rglob("*.wav"))
    assert len(wavs) == 4
    mtimes = {p: p.stat().st_mtime_ns for p in wavs}
    wavs[0].unlink()
    first = list(read_manifest(out / "manifest.jsonl"))
    _run(manifest, out)
    assert wavs[0].exists()
    for p in wavs[1:]:
        assert p.stat().st_mtime_ns == mtimes[p]  # untouched
    again = list(read_manifest(out / "manifest.jsonl"))
    assert [d.model_dump() for d in again] == [d.model_dump() for d in first]


def test_agent_and_all_speakers(manifest, tmp_path):
    out = tmp_path / "out"
    dialogues = list(read_manifest(_run(manifest, out, speakers="all")))
    assert all(t.audio is not None for d in dialogues for t in d.turns)
    assert (out / "audio" / "d1" / "001_agent.wav").exists()
    with pytest.raises(SynthError):
        _run(manifest, tmp_path / "x", speakers="bots")


def test_bad_ids_cannot_escape(tmp_path):
    bad = ["../../evil", "/etc/passwd", "..", "a/../../b", "x\\..\\y", "."]
    for i in bad:
        name = safe_name(i)
        assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert safe_name("a/b") != safe_name("a_b")  # sanitizing never merges two ids
    src = [d.model_copy(update={"id": i}) for d, i in zip(_dialogues() * 3, bad)]
    out = tmp_path / "out"
    dialogues = list(read_manifest(_run(src, out)))
    files = list(tmp_path.rglob("*.wav"))
    assert files and all((out / "audio") in f.parents for f in files)
    assert not (tmp_path / "evil").exists()
    for d in dialogues:
        for t in d.user_turns:
            assert (out / t.audio.path).resolve().is_relative_to((out / "audio").resolve())


def test_voice_assignment_deterministic_and_settings_guard(manifest, tmp_path):
    voices = ["en-us", "en-us+f3", "en-gb"]
    assert assign_voice("d1", voices) == assign_voice("d1", list(voices))
    out = tmp_path / "out"
    d = list(read_manifest(_run(manifest, out, voices=voices)))
    assert {t.audio.voice for x in d for t in x.user_turns} <= set(voices)
    with pytest.raises(SynthError, match="other settings"):
        _run(manifest, out, voices=["en-us"])  # same dir, different voices: refused, not mixed
    with pytest.raises(SpokenTODError, match="unknown espeak-ng voice"):
        _run(manifest, tmp_path / "y", voices=["xx-nope"])  # unknown voice fails up front


def test_failed_turn_reported_and_run_continues(tmp_path):
    src = _dialogues()
    src[0].turns[2].text = "?!"  # nothing to speak: the TTS raises
    out = tmp_path / "out"
    with pytest.raises(SynthError) as e:
        _run(src, out)
    assert e.value.failures and e.value.failures[0][:2] == ("d1", 2)
    dialogues = list(read_manifest(out / "manifest.jsonl"))  # still written
    assert dialogues[0].turns[2].audio is None
    assert dialogues[1].turns[2].audio is not None
    assert src[0].turns[0].audio is None  # the caller's objects are not modified


def test_existing_audio_of_unrendered_turns_is_rebased(tmp_path):
    src = _dialogues()
    src[0].turns[1].audio = Audio(path="clips/agent.wav", sample_rate=16000, duration=1.0)
    write_manifest(tmp_path / "in" / "m.jsonl", src)
    out = tmp_path / "out"
    d = list(read_manifest(_run(tmp_path / "in" / "m.jsonl", out)))
    assert d[0].turns[1].audio.path == "../in/clips/agent.wav"
    assert (out / d[0].turns[1].audio.path).resolve() == (tmp_path / "in" / "clips" / "agent.wav").resolve()
