"""`spokentod data validate` on bad input: every defect yields a Problem naming file, record and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from spokentod.cli import app
from spokentod.data import corpora
from spokentod.data.schema import Audio, Dialogue, Speaker, Turn
from spokentod.data.validate import Limits, validate_path
from spokentod.errors import Problem

RATE = 16000


def tone(seconds: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def wav(path: Path, x: np.ndarray | None = None, rate: int = RATE, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(rate=rate) if x is None else x, rate, **kw)
    return path


def dialogue(did: str, path: str = "audio/ok.wav", rate: int = RATE, duration: float = 0.5) -> dict:
    return {"id": did, "source": "test", "turns": [
        {"index": 0, "speaker": "user", "text": "hi", "phase": "chitchat",
         "audio": {"path": path, "sample_rate": rate, "duration": duration}},
        {"index": 1, "speaker": "agent", "text": "hello", "phase": "chitchat"}]}


def manifest(folder: Path, *lines: dict | str) -> Path:
    m = folder / "m.jsonl"
    m.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return m


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    wav(tmp_path / "c" / "audio" / "ok.wav")
    return tmp_path / "c"


def only(problems, **want):
    """The single Problem; asserts its file and the given attributes (message: substring)."""
    assert len(problems) == 1, "\n".join(map(str, problems))
    p = problems[0]
    for k, v in want.items():
        assert (v in p.message) if k == "message" else getattr(p, k) == v, str(p)
    return p


def test_clean_manifest(folder):
    m = manifest(folder, dialogue("d1"), dialogue("d2"))
    assert validate_path(m) == []
    result = CliRunner().invoke(app, ["data", "validate", str(m)])
    assert result.exit_code == 0, result.output


# --- structure and schema: every bad line is listed, the good ones still get checked -----------------

def test_malformed_json_line(folder):
    m = manifest(folder, dialogue("d1"), '{"id": "d2", "turns": [', dialogue("d3"))
    only(validate_path(m), file=str(m), record="line 2", field=None, message="malformed JSON")


def test_missing_field(folder):
    d = dialogue("d1")
    del d["turns"][1]["text"]
    only(validate_path(manifest(folder, d)), record="line 1 (d1)", field="turns.1.text", message="required")


def test_unknown_phase(folder):
    d = dialogue("d1")
    d["turns"][0]["phase"] = "smalltalk"
    only(validate_path(manifest(folder, d)), record="line 1 (d1)", field="turns.0.phase", message="chitchat")


def test_unknown_speaker(folder):
    d = dialogue("d1")
    d["turns"][1]["speaker"] = "system"
    only(validate_path(manifest(folder, d)), record="line 1 (d1)", field="turns.1.speaker")


def test_empty_dialogue(folder):
    d = dialogue("d1") | {"turns": []}
    only(validate_path(manifest(folder, d)), record="line 1 (d1)", field="turns", message="no turns")


def test_turn_order(folder):
    d = dialogue("d1")
    d["turns"][1]["index"] = 5
    only(validate_path(manifest(folder, d)), record="line 1 (d1)", message="turns[1].index is 5")


def test_duplicate_ids(folder):
    m = manifest(folder, dialogue("d1"), dialogue("d2"), dialogue("d1"))
    only(validate_path(m), record="line 3 (d1)", field="id", message="first at line 1 (d1)")


def test_all_bad_lines_listed_and_invalid_line_audio_still_checked(folder):
    bad = dialogue("d2", path="audio/missing.wav")
    bad["turns"][1]["phase"] = "smalltalk"
    m = manifest(folder, "not json", bad, dialogue("d3", path="audio/gone.wav"))
    got = {(p.record, p.field) for p in validate_path(m)}
    assert got == {("line 1", None), ("line 2 (d2)", "turns.1.phase"), ("line 2 (d2)", "turns.0.audio.path"),
                   ("line 3 (d3)", "turns.0.audio.path")}


# --- audio files ------------------------------------------------------------------------------------

def test_dangling_audio_path(folder):
    p = only(validate_path(manifest(folder, dialogue("d1", path="audio/nope.wav"))),
             record="line 1 (d1)", field="turns.0.audio.path", message="file not found")
    assert "nope.wav" in p.message


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "audio/../../outside.wav"])
def test_path_escaping_root(folder, path):
    wav(folder.parent / "outside.wav")  # exists and is valid audio: the fence alone must reject it
    only(validate_path(manifest(folder, dialogue("d1", path=path))),
         record="line 1 (d1)", field="turns.0.audio.path", message="outside the root")


def test_symlink_escaping_root(folder):
    (folder / "audio" / "link.wav").symlink_to(wav(folder.parent / "outside.wav"))
    only(validate_path(manifest(folder, dialogue("d1", path="audio/link.wav"))),
         field="turns.0.audio.path", message="outside the root")


def test_explicit_root_allows_sibling_folder(folder):
    wav(folder.parent / "shared_audio" / "a.wav")
    m = manifest(folder, dialogue("d1", path="../shared_audio/a.wav"))
    assert validate_path(m, root=folder.parent) == []
    assert validate_path(m)[0].field == "turns.0.audio.path"


def test_corrupt_wav(folder):
    (folder / "audio" / "bad.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    problems = validate_path(manifest(folder, dialogue("d1", path="audio/bad.wav")))
    assert [p.field for p in problems] == ["turns.0.audio.path"] * 2
    assert "no known audio format" in problems[0].message
    assert "unreadable by soundfile" in problems[1].message


def test_truncated_wav(folder):
    full = (folder / "audio" / "ok.wav").read_bytes()
    (folder / "audio" / "cut.wav").write_bytes(full[: len(full) // 2])
    problems = validate_path(manifest(folder, dialogue("d1", path="audio/cut.wav")))
    assert any(p.field == "turns.0.audio.path" and "truncated WAV" in p.message for p in problems), problems
    # the half that is left is ~0.25 s, so the manifest's 0.5 s is also reported
    assert any(p.field == "turns.0.audio.duration" for p in problems)


def test_mp3_named_wav(folder):
    wav(folder / "audio" / "x.mp3", format="MP3")  # real MP3 bytes (libsndfile >= 1.1 encodes MP3)
    (folder / "audio" / "x.mp3").rename(folder / "audio" / "fake.wav")
    only(validate_path(manifest(folder, dialogue("d1", path="audio/fake.wav"))),
         field="turns.0.audio.path", message="content is mp3, but the name says .wav")


@pytest.mark.parametrize("name, kw", [("a.flac", {}), ("a.ogg", {"subtype": "VORBIS"}), ("a.mp3", {})])
def test_compressed_formats_clean_then_cut(folder, name, kw):
    wav(folder / "audio" / name, tone(3.0), **kw)
    assert validate_path(manifest(folder, dialogue("d1", path=f"audio/{name}", duration=3.0))) == []
    data = (folder / "audio" / name).read_bytes()
    (folder / "audio" / name).write_bytes(data[: len(data) // 2])
    problems = validate_path(manifest(folder, dialogue("d1", path=f"audio/{name}", duration=3.0)))
    assert problems and all(p.record == "line 1 (d1)" for p in problems)
    # a cut compressed file is caught by decoding (FLAC, MP3) or by the header (Ogg)
    assert any(w in problems[0].message for w in ("truncated", "decoding failed", "unreadable")), problems


def test_wrong_sample_rate(folder):
    wav(folder / "audio" / "hi.wav", rate=24000)
    only(validate_path(manifest(folder, dialogue("d1", path="audio/hi.wav"))),
         record="line 1 (d1)", field="turns.0.audio.sample_rate", message="24000 Hz")


def test_silent_audio(folder):
    wav(folder / "audio" / "quiet.wav", np.zeros(RATE // 2, np.float32))
    only(validate_path(manifest(folder, dialogue("d1", path="audio/quiet.wav"))),
         field="turns.0.audio.path", message="silent")


def test_duration_mismatch_and_bounds(folder):
    only(validate_path(manifest(folder, dialogue("d1", duration=2.0))),
         field="turns.0.audio.duration", message="manifest says 2.000 s")
    wav(folder / "audio" / "blip.wav", tone(0.01))
    only(validate_path(manifest(folder, dialogue("d1", path="audio/blip.wav", duration=0.01))),
         field="turns.0.audio.duration", message="outside [0.05, 600.0]")
    assert validate_path(manifest(folder, dialogue("d1", path="audio/blip.wav", duration=0.01)),
                         limits=Limits(min_seconds=0.0)) == []


def test_empty_wav(folder):
    wav(folder / "audio" / "empty.wav", np.zeros(0, np.float32))
    only(validate_path(manifest(folder, dialogue("d1", path="audio/empty.wav", duration=0))),
         field="turns.0.audio.duration", message="empty")


def test_many_files_checked_in_order(folder):
    # > 200 files takes the progress-bar path; the report must still follow manifest order
    lines = [dialogue(f"d{i:03d}", path="audio/ok.wav" if i % 50 else f"audio/missing{i}.wav")
             for i in range(240)]
    problems = validate_path(manifest(folder, *lines), workers=2)
    assert [p.record for p in problems] == [f"line {i + 1} (d{i:03d})" for i in (0, 50, 100, 150, 200)]


def test_missing_manifest(tmp_path):
    only(validate_path(tmp_path / "nope.jsonl"), message="does not exist")


# --- corpus files go through the loader registry, leniently -----------------------------------------

def test_corpus_problems_collected(folder, monkeypatch):
    def load(path, lenient=False, problems=None):
        assert lenient, "validate must load leniently to see every problem"
        problems.append(Problem(str(path), "rec7", "log.3.text", "missing required field"))
        turn = Turn(index=0, speaker=Speaker.user, text="hi",
                    audio=Audio(path="audio/missing.wav", sample_rate=RATE, duration=0.5))
        return [Dialogue(id="x", source="fake", turns=[turn])] * 2

    corpora.names()  # register the real loaders first, then ours into a copy of the registry
    monkeypatch.setattr(corpora, "_CORPORA", dict(corpora._CORPORA))
    corpora.corpus("fake-test")(load)
    got = [(p.record, p.field) for p in validate_path(folder, corpus="fake-test")]
    assert got == [("rec7", "log.3.text"), ("x", "turns.0.audio.path"), ("x", "id"), ("x", "turns.0.audio.path")]
    only(validate_path(folder, corpus="no-such-corpus"), message="unknown corpus")


# --- CLI exit codes ---------------------------------------------------------------------------------

def test_cli_exits_1_and_prints_each_problem(folder):
    d = dialogue("d1", path="../../etc/passwd")
    d["turns"][1]["phase"] = "smalltalk"
    m = manifest(folder, d, dialogue("d1"))
    result = CliRunner().invoke(app, ["data", "validate", str(m)])
    assert result.exit_code == 1
    for text in ("[record line 1 (d1)] field 'turns.0.audio.path'", "field 'turns.1.phase'",
                 "[record line 2 (d1)] field 'id'", "3 problem(s)"):
        assert text in result.output, result.output
