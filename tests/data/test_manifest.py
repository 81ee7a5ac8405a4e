"""JSONL manifests: streaming round trip, strict errors that locate the problem, lenient reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spokentod.data.manifest import read_manifest, resolve_audio_path, write_manifest
from spokentod.data.schema import Audio, Dialogue, Intent, Phase, Speaker, Turn
from spokentod.errors import DataError


def make(did: str) -> Dialogue:
    return Dialogue(id=did, source="salesbot2", intent=Intent(type="FindMovie"), metadata={"split": "test", "x": None},
                    turns=[Turn(index=0, speaker=Speaker.user, text="Je veux voir un film — ce soir ☺",
                                phase=Phase.chitchat, audio=Audio(path="a/0.wav", sample_rate=16000, duration=1.25)),
                           Turn(index=1, speaker=Speaker.agent, text="Sure.", phase=Phase.transition,
                                state={"movie": {"date": "tonight", "genre": ["drama", "thriller"]}},
                                acts={"inform": [["genre", None]]})])


def line(did: str, **turn_changes) -> str:
    d = json.loads(make(did).model_dump_json(exclude_none=True))
    d["turns"][1].update(turn_changes)
    return json.dumps(d)


def test_round_trip_is_lossless(tmp_path):
    dialogues = [make(f"d{i}") for i in range(5)]
    m = tmp_path / "sub" / "m.jsonl"
    assert write_manifest(m, iter(dialogues)) == 5  # any iterable, written as it streams
    assert list(read_manifest(m)) == dialogues
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_read_streams(tmp_path):
    # the first dialogue is yielded before a later bad line is even read
    m = tmp_path / "m.jsonl"
    m.write_text(line("d1") + "\n" + "{broken\n")
    it = read_manifest(m)
    assert next(it).id == "d1"
    with pytest.raises(DataError):
        next(it)


def test_strict_names_line_id_and_field(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(line("d1") + "\n\n" + line("d2", phase="smalltalk") + "\n")
    with pytest.raises(DataError) as e:
        list(read_manifest(m))
    (p,) = e.value.problems
    assert (p.file, p.record, p.field) == (str(m), "line 3 (d2)", "turns.1.phase")
    assert "line 3 (d2)" in str(e.value) and "turns.1.phase" in str(e.value)


def test_strict_malformed_json(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(line("d1") + "\n" + '{"id": "d2",\n')
    with pytest.raises(DataError, match=r"line 2.*malformed JSON"):
        list(read_manifest(m))


def test_lenient_collects_every_problem_and_keeps_every_good_line(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_bytes("\n".join([
        line("d1"),
        "{not json",
        line("d2"),
        line("d3", speaker="robot", text=None),  # two problems in one line
        '{"id": "d4", "source": "x", "turns": []}',
        line("d5"),
        "[1, 2]",
    ]).encode() + b"\n\xff\xfe broken bytes\n" + line("d6").encode() + b"\n")
    problems = []
    good = [d.id for d in read_manifest(m, lenient=True, problems=problems)]
    assert good == ["d1", "d2", "d5", "d6"]
    got = [(p.record, p.field) for p in problems]
    assert got == [("line 2", None), ("line 4 (d3)", "turns.1.speaker"), ("line 4 (d3)", "turns.1.text"),
                   ("line 5 (d4)", "turns"), ("line 7", None), ("line 8", None)]
    assert "not UTF-8" in problems[-1].message
    assert all(p.file == str(m) for p in problems)


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list(read_manifest(tmp_path / "nope.jsonl"))


def test_failed_write_leaves_no_partial_file(tmp_path):
    def gen():
        yield make("d1")
        raise RuntimeError("disk full")

    m = tmp_path / "m.jsonl"
    write_manifest(m, [make("old")])
    with pytest.raises(RuntimeError):
        write_manifest(m, gen())
    assert [d.id for d in read_manifest(m)] == ["old"]  # the previous manifest is intact
    assert not list(tmp_path.glob("*.tmp"))


def test_resolve_audio_path(tmp_path):
    base = tmp_path / "corpus"
    (base / "a").mkdir(parents=True)
    assert resolve_audio_path(base, "a/x.wav") == (base / "a" / "x.wav").resolve()
    assert resolve_audio_path(base, str(base / "a" / "x.wav")) == (base / "a" / "x.wav").resolve()
    assert resolve_audio_path(base, "../other/x.wav", root=tmp_path) == (tmp_path / "other" / "x.wav").resolve()
    for bad in ("../../etc/passwd", "/etc/passwd", "a/../../x.wav", "", "  "):
        with pytest.raises(ValueError):
            resolve_audio_path(base, bad)
    (base / "a" / "link.wav").symlink_to(tmp_path / "outside.wav")
    with pytest.raises(ValueError, match="outside the root"):
        resolve_audio_path(base, "a/link.wav")


def test_round_trip_unicode_file_is_utf8(tmp_path):
    m = tmp_path / "m.jsonl"
    write_manifest(m, [make("d1")])
    assert "☺" in Path(m).read_text(encoding="utf-8")
