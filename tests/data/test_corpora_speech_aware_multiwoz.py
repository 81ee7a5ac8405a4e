"""DSTC11 Speech-Aware MultiWOZ: annotations joined with per-user-turn WAVs (<dialogue>/Turn-<k>.wav).
The audio here is a short tone: this checks the join and the errors, not the speech."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from spokentod.data import corpora
from spokentod.data.corpora import multiwoz21
from spokentod.data.corpora import speech_aware_multiwoz as sam
from spokentod.data.manifest import read_manifest, write_manifest
from spokentod.data.schema import Speaker
from spokentod.errors import DataError, Problem

RATE = 16000
TONE = (0.1 * np.sin(2 * np.pi * 440 * np.arange(RATE // 2) / RATE)).astype("float32")  # 0.5 s

MANIFEST = """\
line_nr: 0 dialog_id: sng0073.json turn_id: 1 text: user: i would like a taxi from saint john's college to pizza hut fen ditton. state: taxi-destination=pizza hut fenditton; taxi-departure=saint johns college
line_nr: 1 dialog_id: sng0073.json turn_id: 2 text: agent: what time do you want to leave and what time do you want to arrive by? state:
line_nr: 1 dialog_id: sng0073.json turn_id: 3 text: user: i want to leave after 0:47 am. state: taxi-leaveat=0:47 am; taxi-destination=pizza hut fenditton; taxi-departure=saint johns college
END_OF_DIALOG
line_nr: 2 dialog_id: mul2499.json turn_id: 1 text: user: yes please, for 8 people at 2:12 am on thursday. state: restaurant-time=2:12 am; restaurant-day=thursday; restaurant-people=8; restaurant-name=west bank cafe
END_OF_DIALOG
"""


def wavs(folder, turn_ids):
    folder.mkdir(parents=True, exist_ok=True)
    for k in turn_ids:
        sf.write(folder / f"Turn-{k}.wav", TONE, RATE)


@pytest.fixture(scope="module")
def sng0073(data_dir):
    return json.loads((data_dir / "multiwoz/mwz21_convlab2/test.json").read_text())["SNG0073"]


@pytest.fixture
def json_corpus(tmp_path, sng0073):
    """SNG0073 from the real MultiWOZ 2.1 test file, with audio for its 4 user turns (log 0, 2, 4, 6)."""
    (tmp_path / "test.json").write_text(json.dumps({"SNG0073": sng0073}))
    wavs(tmp_path / "SNG0073", [1, 3, 5, 7])
    return tmp_path


def test_multiwoz_json_joined_with_turn_audio(json_corpus, sng0073):
    assert corpora.detect(json_corpus) == "speech-aware-multiwoz"
    assert not multiwoz21._detect(json_corpus)  # the audio folders make it speech-aware, not plain 2.1
    (d,) = sam.load(json_corpus)
    assert d.id == "SNG0073" and d.source == "speech-aware-multiwoz"
    for t in d.turns:
        if t.speaker == Speaker.user:
            assert t.audio.path == str((json_corpus / "SNG0073" / f"Turn-{t.index + 1}.wav").resolve())
            assert (t.audio.sample_rate, t.audio.duration) == (RATE, 0.5)
        else:
            assert t.audio is None
    write_manifest(json_corpus / "m.jsonl", [d])  # audio survives the manifest round trip
    assert list(read_manifest(json_corpus / "m.jsonl")) == [d]
    plain = multiwoz21.convert("test.json", "SNG0073", sng0073)
    assert [(t.text, t.state) for t in d.turns] == [(t.text, t.state) for t in plain.turns]


def test_dstc11_manifest(tmp_path):
    (tmp_path / "dev_manifest.txt").write_text(MANIFEST)
    wavs(tmp_path / "sng0073", [1, 3])
    wavs(tmp_path / "MUL2499.json", [1])  # folder names match case-insensitively, with or without .json
    assert corpora.detect(tmp_path / "dev_manifest.txt") == "speech-aware-multiwoz"
    a, b = sam.load(tmp_path)
    assert (a.id, a.metadata["original_id"]) == ("SNG0073", "sng0073.json")
    assert [t.speaker for t in a.turns] == [Speaker.user, Speaker.agent, Speaker.user]
    assert a.turns[2].text == "i want to leave after 0:47 am."
    assert a.turns[2].state == {
        "taxi": {
            "leaveat": "0:47 am",
            "destination": "pizza hut fenditton",
            "departure": "saint johns college",
        }
    }
    assert a.turns[1].state is None and a.turns[2].audio.path.endswith("sng0073/Turn-3.wav")
    # DSTC11 writes booking slots bare: restaurant-time is our "book time"
    assert b.turns[0].state == {
        "restaurant": {
            "book time": "2:12 am",
            "book day": "thursday",
            "book people": "8",
            "name": "west bank cafe",
        }
    }


def test_audio_dir_option(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann/dev_manifest.txt").write_text(MANIFEST)
    wavs(tmp_path / "audio/SNG0073", [1, 3])
    wavs(tmp_path / "audio/MUL2499", [1])
    assert len(sam.load(tmp_path / "ann/dev_manifest.txt", audio_dir=tmp_path / "audio")) == 2


def test_missing_audio_strict_and_lenient(json_corpus):
    (json_corpus / "SNG0073" / "Turn-5.wav").unlink()
    with pytest.raises(DataError, match="audio file not found") as e:
        sam.load(json_corpus)
    p = e.value.problems[0]
    assert (p.file, p.record, p.field) == (str(json_corpus / "test.json"), "SNG0073", "turns.4.audio")
    problems: list[Problem] = []
    assert sam.load(json_corpus, lenient=True, problems=problems) == []
    assert len(problems) == 1 and problems[0].field == "turns.4.audio"


def test_unreadable_audio_is_an_error(json_corpus):
    (json_corpus / "SNG0073" / "Turn-3.wav").write_bytes(b"not a wav")
    with pytest.raises(DataError, match="unreadable audio"):
        sam.load(json_corpus)


def test_bad_manifest_lines_and_state(tmp_path):
    (tmp_path / "m.txt").write_text(
        MANIFEST
        + "line_nr: 3 dialog_id: pmul1.json turn_id: 1 txt: broken line\n"
        + "line_nr: 4 dialog_id: pmul2.json turn_id: 1 text: user: hi state: taxi-leaveat\n"
    )
    wavs(tmp_path / "sng0073", [1, 3])
    wavs(tmp_path / "mul2499", [1])
    wavs(tmp_path / "pmul2", [1])
    with pytest.raises(DataError) as e:
        sam.load(tmp_path / "m.txt")
    assert (e.value.problems[0].record, e.value.problems[0].field) == ("pmul1.json", "line 7")
    problems: list[Problem] = []
    assert len(sam.load(tmp_path / "m.txt", lenient=True, problems=problems)) == 2
    assert [(p.record, p.field) for p in problems] == [
        ("pmul1.json", "line 7"),
        ("pmul2.json", "line 8.state"),
    ]


def test_ambiguous_dir_and_malformed_json(json_corpus):
    (json_corpus / "dev_manifest.txt").write_text(MANIFEST)
    with pytest.raises(DataError, match="exactly one annotation file"):
        sam.load(json_corpus)
    (json_corpus / "test.json").write_text('{"SNG0073": {')
    with pytest.raises(DataError, match="malformed JSON"):
        sam.load(json_corpus / "test.json")


@pytest.mark.slow
def test_tts_rendered_directory_transcribes_back(tmp_path, sng0073):
    """The real thing: SNG0073's user turns spoken by the embedded Kokoro TTS into the DSTC11 layout,
    loaded, and heard back by Whisper tiny.en close to the annotated text."""
    import jiwer

    from spokentod.audio import resample, write_wav
    from spokentod.backends.base import create
    from spokentod.metrics.text import normalize_for_wer

    (tmp_path / "test.json").write_text(json.dumps({"SNG0073": sng0073}))
    plain = multiwoz21.convert("test.json", "SNG0073", sng0073)
    tts = create("tts", {"name": "kokoro"})
    (tmp_path / "SNG0073").mkdir()
    for t in plain.user_turns:
        out = tts.synthesize(t.text)
        write_wav(tmp_path / "SNG0073" / f"Turn-{t.index + 1}.wav", resample(out.samples, out.rate, RATE), RATE)
    (d,) = corpora.load("speech-aware-multiwoz", tmp_path)
    asr = create("asr", {"name": "whisper-ct2"})
    refs = [normalize_for_wer(t.text) for t in d.user_turns]
    hyps = [normalize_for_wer(asr.transcribe(t.audio.path).text) for t in d.user_turns]
    assert all(t.audio.sample_rate == RATE and t.audio.duration > 1.0 for t in d.user_turns)
    assert jiwer.wer(refs, hyps) < 0.25
