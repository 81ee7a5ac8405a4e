"""dst/data: examples from real MultiWOZ 2.1 and hand-built dialogues, filters and drop counts, targets,
output parsing (repairs), ASR items from lhotse and dialogue manifests, the domain split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spokentod.data.corpora import multiwoz21
from spokentod.data.manifest import write_manifest
from spokentod.data.schema import Audio, Dialogue, Speaker, Turn
from spokentod.dst.data.asr_items import load_asr_items
from spokentod.dst.data.domains import split_by_domain
from spokentod.dst.data.examples import (
    DropReport,
    Filters,
    HistoryFormat,
    asr_target,
    dialogue_examples,
    format_history,
    make_examples,
    target_json,
)
from spokentod.errors import DataError

U, A = Speaker.user, Speaker.agent


@pytest.fixture(scope="module")
def val(data_dir):
    return multiwoz21.load(data_dir / "multiwoz/mwz21_convlab2/val.json")


def by_id(dialogues, did):
    return next(d for d in dialogues if d.id == did)


# --- real MultiWOZ 2.1 --------------------------------------------------------------------------------

AGENT_3 = ("If you'd like something cheap, I recommend the Allenbell. For something moderately priced, "
           "I would recommend the Warkworth House.")


def test_mwz21_examples_history_state_ordinals(val):
    d = by_id(val, "PMUL1635")
    examples, report = make_examples([d], "text")
    assert report.dropped == 0 and report.kept == len(examples) == len(d.user_turns) == 9
    assert [e.ordinal for e in examples] == list(range(9))
    assert [e.turn for e in examples] == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    first, third = examples[0], examples[2]
    assert first.history == () and first.audio is None and first.duration is None
    assert first.state == {"hotel": {"area": "east", "stars": "4"}} and first.domains == ("hotel",)
    assert third.transcript == "Could you book the Wartworth for one night, 1 person?"
    assert third.history == (
        ("user", "I need to book a hotel in the east that has 4 stars."),
        ("agent", "I can help you with that. What is your price range?"),
        ("user", "That doesn't matter as long as it has free wifi and parking."),
        ("agent", AGENT_3),
    )
    assert third.state == {"hotel": {"area": "east", "internet": "yes", "name": "wartworth",
                                     "parking": "yes", "stars": "4"}}
    for e in examples:  # history = every earlier turn, gold text, whatever the speaker
        assert e.history == tuple((t.speaker.value, t.text) for t in d.turns[:e.turn])
        assert e.state == d.turns[e.turn].state and e.transcript == d.turns[e.turn].text
    # cumulative: the hotel slots of turn 2 are still there at turn 6, plus the booking
    assert examples[3].state["hotel"].items() >= third.state["hotel"].items()
    assert examples[3].state["hotel"]["book day"] == "friday"


def test_mwz21_whole_split_counts_every_turn(val):
    text, rep_text = make_examples(val, "text")
    assert len(text) == rep_text.kept == 7365 and rep_text.dropped == 0
    speech, rep_speech = make_examples(val, "speech")  # MultiWOZ has no audio: all counted, none silent
    assert speech == [] and rep_speech.counts == {"no_audio": 7365}
    assert len(rep_speech.examples["no_audio"]) == 5
    assert rep_speech.summary().startswith("7365 of 7365 examples: no_audio 7365 (e.g. PMUL1635/0, ")
    report = DropReport()
    groups = dialogue_examples(val[:5], "speech", report=report)  # no dialogue keeps an example: none listed
    assert groups == [] and report.counts["no_audio"] == sum(len(d.user_turns) for d in val[:5])
    groups = dialogue_examples(val[:5], "text")
    assert [g[0].dialogue_id for g in groups] == [d.id for d in val[:5]]
    assert all([e.ordinal for e in g] == list(range(len(g))) for g in groups)


def test_split_by_domain_on_mwz21(val):
    src, tgt, mixed = split = split_by_domain(val, {"hotel", "restaurant"}, {"taxi", "train"})
    assert len(src) + len(tgt) + len(mixed) + len(split.no_domain) == len(val)
    assert by_id(val, "PMUL1635") in mixed  # hotel + train
    assert all({dom for t in d.user_turns for dom in (t.state or {})} <= {"hotel", "restaurant"} for d in src)
    assert src and tgt


# --- hand-built dialogues: filters and drop counts ----------------------------------------------------

def _audio(root: Path, name: str, seconds: float, write: bool = True) -> Audio:
    if write:
        (root / "audio").mkdir(parents=True, exist_ok=True)
        (root / "audio" / name).write_bytes(b"RIFF")  # only existence is checked here
    return Audio(path=f"audio/{name}", sample_rate=16000, duration=seconds)


def _filter_dialogue(root: Path) -> Dialogue:
    st = {"hotel": {"area": "north"}}
    turns = [
        (U, "ok turn", st, _audio(root, "u0.wav", 2.0)),
        (A, "agent reply", None, _audio(root, "a1.wav", 1.0)),
        (U, "no audio", st, None),
        (U, "too long", st, _audio(root, "u3.wav", 31.0)),
        (U, "too short", st, _audio(root, "u4.wav", 0.05)),
        (U, "no state", None, _audio(root, "u5.wav", 1.0)),
        (U, "file missing", st, _audio(root, "u6.wav", 1.0, write=False)),
        (U, "escapes", st, Audio(path="../outside.wav", sample_rate=16000, duration=1.0)),
        (U, "fine again", {"hotel": {"area": "north", "stars": "4"}}, _audio(root, "u8.wav", 3.0)),
    ]
    return Dialogue(id="d1", source="test", turns=[
        Turn(index=i, speaker=s, text=x, state=state, audio=a) for i, (s, x, state, a) in enumerate(turns)])


def test_speech_filters_count_every_drop(tmp_path):
    root = tmp_path / "root"
    d = _filter_dialogue(root)
    (tmp_path / "outside.wav").write_bytes(b"RIFF")  # exists, but outside the audio root
    examples, report = make_examples([d], "speech", audio_root=root, filters=Filters(min_audio_s=0.1))
    assert [e.turn for e in examples] == [0, 8] and [e.ordinal for e in examples] == [0, 7]
    assert examples[0].audio == str((root / "audio" / "u0.wav").resolve()) and examples[0].duration == 2.0
    assert examples[1].history[1] == ("agent", "agent reply")
    assert report.counts == {"no_audio": 1, "audio_too_long": 1, "audio_too_short": 1, "no_state": 1,
                             "audio_file_missing": 1, "bad_audio_path": 1}
    assert report.kept + report.dropped == len(d.user_turns)
    assert report.examples["audio_too_long"] == ["d1/3"] and report.examples["bad_audio_path"] == ["d1/7"]
    assert report.as_dict()["counts"]["no_state"] == 1 and report.as_dict()["kept"] == 2
    # looser filters keep more; text ignores audio entirely
    loose, rep = make_examples([d], "speech", audio_root=root,
                               filters=Filters(max_audio_s=None, require_state=False))
    assert {e.turn for e in loose} == {0, 3, 4, 5, 8} and rep.counts == {
        "no_audio": 1, "audio_file_missing": 1, "bad_audio_path": 1}
    assert next(e for e in loose if e.turn == 5).state == {}
    text, rep = make_examples([d], "text")
    assert len(text) == 7 and rep.counts == {"no_state": 1} and all(e.audio is None for e in text)


def test_relative_audio_needs_a_root(tmp_path):
    with pytest.raises(DataError, match="audio_root"):
        make_examples([_filter_dialogue(tmp_path)], "speech")
    with pytest.raises(ValueError, match="modality"):
        make_examples([], "video")


def test_token_filters():
    def words(s):
        return len(s.split())

    turns = [Turn(index=i, speaker=U if i % 2 == 0 else A, text=f"turn {i} " + "word " * i,
                  state={"taxi": {"leaveat": "17:15"}} if i % 2 == 0 else None) for i in range(6)]
    d = Dialogue(id="t", source="test", turns=turns)
    with pytest.raises(ValueError, match="count_tokens"):
        make_examples([d], "text", filters=Filters(max_history_tokens=5))
    ex, rep = make_examples([d], "text", filters=Filters(max_history_tokens=12), count_tokens=words)
    assert [e.turn for e in ex] == [0, 2] and rep.counts == {"history_too_long": 1}
    # the filter measures the history as formatted: keeping only the last turn makes turn 4 fit
    ex, rep = make_examples([d], "text", filters=Filters(max_history_tokens=12), count_tokens=words,
                            history_format=HistoryFormat(max_turns=1))
    assert [e.turn for e in ex] == [0, 2, 4] and not rep.counts
    ex, rep = make_examples([d], "text", filters=Filters(max_target_tokens=9), count_tokens=words)
    assert [e.turn for e in ex] == [0] and rep.counts == {"target_too_long": 2}


def test_gold_value_lists_and_active_domains():
    t = Turn(index=0, speaker=U, text="Any concerts tonight in Zürich?",
             state={"events": {"date": ["tonight", "today"], "city": "zürich"}, "empty": {}},
             metadata={"services_in_turn": ["Events_1"]})
    (e,), _ = make_examples([Dialogue(id="s", source="sgd", turns=[t])], "text")
    assert e.state == {"events": {"city": "zürich", "date": "tonight"}}  # lists → first; empty domain out
    assert e.domains == ("events_1",)  # the corpus's active domains win over the state's
    assert target_json(e.transcript, t.state) == (
        '{"transcript": "Any concerts tonight in Zürich?", '
        '"state": {"events": {"city": "zürich", "date": "tonight"}}}')


# --- history, targets ---------------------------------------------------------------------------------

def test_format_history():
    h = (("user", "hi"), ("agent", "hello"), ("user", "a taxi"))
    assert format_history(h) == "user: hi\nagent: hello\nuser: a taxi"
    assert format_history(h, HistoryFormat(max_turns=2, separator=" | ", agent_prefix="sys: ")) == (
        "sys: hello | user: a taxi")
    assert format_history((), HistoryFormat()) == "(none)"
    assert format_history(h, HistoryFormat(max_turns=0, empty="-")) == "-"


def test_target_json_is_sorted_and_round_trips():
    state = {"train": {"leaveat": "10:00", "day": "monday"}, "hotel": {"area": "north"}}
    out = target_json('say "hi"', state)
    assert out == ('{"transcript": "say \\"hi\\"", "state": {"hotel": {"area": "north"}, '
                   '"train": {"day": "monday", "leaveat": "10:00"}}}')
    assert target_json("x", {}) == '{"transcript": "x", "state": {}}'
    from spokentod.dst.infer.parse import parse_output

    p = parse_output(out)
    assert (p.transcript, p.state, p.repaired, p.error) == ('say "hi"', json.loads(out)["state"], False, None)
    assert asr_target("I need a taxi.") == "I need a taxi."


# --- ASR items ----------------------------------------------------------------------------------------

def _wav(path: Path, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.sin(np.arange(int(seconds * 16000)) / 5.0)).astype("float32"), 16000)
    return path


@pytest.fixture
def lhotse_sets(tmp_path):
    lhotse = pytest.importorskip("lhotse")
    recs = lhotse.RecordingSet.from_recordings(
        [lhotse.Recording.from_file(_wav(tmp_path / "wav" / f"r{i}.wav", 0.5 + i), recording_id=f"r{i}")
         for i in range(2)])
    sups = lhotse.SupervisionSet.from_segments(
        [lhotse.SupervisionSegment(id=f"s{i}", recording_id=f"r{i}", start=0.0, duration=0.5 + i,
                                   text=f"utterance {i}") for i in range(2)])
    return lhotse, recs, sups


def test_asr_items_from_lhotse_cuts_and_pairs(tmp_path, lhotse_sets):
    lhotse, recs, sups = lhotse_sets
    expected = [(f"s{i}", str((tmp_path / "wav" / f"r{i}.wav").resolve()), f"utterance {i}", 0.5 + i)
                for i in range(2)]
    cuts = lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups)
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    items = load_asr_items(tmp_path / "cuts.jsonl.gz")
    assert sorted((x.id, x.audio, x.text, x.duration) for x in items) == expected
    pair = tmp_path / "pair"
    pair.mkdir()
    recs.to_file(pair / "dev_recordings.jsonl.gz")
    sups.to_file(pair / "dev_supervisions.jsonl.gz")
    for p in (pair, pair / "dev_recordings.jsonl.gz", pair / "dev_supervisions.jsonl.gz"):
        assert sorted((x.id, x.audio, x.text, x.duration) for x in load_asr_items(p)) == expected
    (pair / "dev_supervisions.jsonl.gz").unlink()
    with pytest.raises(DataError, match="supervisions"):
        load_asr_items(pair / "dev_recordings.jsonl.gz")


def test_asr_items_reject_segments_and_junk(tmp_path, lhotse_sets):
    lhotse, recs, _ = lhotse_sets
    seg = lhotse.SupervisionSet.from_segments(
        [lhotse.SupervisionSegment(id="seg", recording_id="r1", start=0.6, duration=0.4, text="part")])
    lhotse.CutSet.from_manifests(recordings=recs, supervisions=seg).to_file(tmp_path / "c.jsonl")
    with pytest.raises(DataError, match="cut segments into files"):
        load_asr_items(tmp_path / "c.jsonl")
    (tmp_path / "junk.jsonl").write_text('{"hello": 1}\n')
    with pytest.raises(DataError, match="not a dialogue manifest"):
        load_asr_items(tmp_path / "junk.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        load_asr_items(tmp_path / "nope.jsonl")


def test_asr_items_from_dialogue_manifest(tmp_path):
    _wav(tmp_path / "audio" / "d_0.wav", 0.5)
    _wav(tmp_path / "audio" / "d_1.wav", 0.25)
    d = Dialogue(id="d", source="test", turns=[
        Turn(index=0, speaker=U, text="A taxi please.", audio=Audio(path="audio/d_0.wav", sample_rate=16000,
                                                                  duration=0.5)),
        Turn(index=1, speaker=A, text="Where to?", audio=Audio(path="audio/d_1.wav", sample_rate=16000,
                                                             duration=0.25)),
        Turn(index=2, speaker=U, text="The station.")])
    write_manifest(tmp_path / "m.jsonl", [d])
    items = load_asr_items(tmp_path / "m.jsonl")
    assert [(x.id, x.audio, x.text, x.duration) for x in items] == [
        ("d/0", str((tmp_path / "audio" / "d_0.wav").resolve()), "A taxi please.", 0.5),
        ("d/1", str((tmp_path / "audio" / "d_1.wav").resolve()), "Where to?", 0.25)]
    (tmp_path / "audio" / "d_1.wav").unlink()
    d.turns[0].text = " "
    write_manifest(tmp_path / "m.jsonl", [d])
    with pytest.raises(DataError) as e:  # every problem listed, each naming its turn
        load_asr_items(tmp_path / "m.jsonl")
    assert [(p.record, p.field, p.message) for p in e.value.problems] == [
        ("d", "turns.0", "no transcript text"),
        ("d", "turns.1", f"audio file {(tmp_path / 'audio' / 'd_1.wav').resolve()} does not exist")]


# --- domain split -------------------------------------------------------------------------------------

def test_split_by_domain_hand_built():
    def dlg(did, *states):
        return Dialogue(id=did, source="test", turns=[Turn(index=i, speaker=U, text="x", state=s)
                                                      for i, s in enumerate(states)])
    hotel = dlg("h", {"hotel": {"area": "north"}})
    taxi = dlg("t", None, {"taxi": {"leaveat": "1"}})
    both = dlg("b", {"hotel": {"area": "north"}}, {"hotel": {"area": "north"}, "taxi": {"leaveat": "1"}})
    police = dlg("p", {"police": {"name": "x"}})
    none = dlg("n", None, {}, {"hotel": {}})
    split = split_by_domain([hotel, taxi, both, police, none], {"hotel"}, {"taxi"})
    src, tgt, mixed = split
    assert (src, tgt, mixed, split.no_domain) == ([hotel], [taxi], [both, police], [none])
    assert split.source is src and split.mixed is mixed
    with pytest.raises(ValueError, match="overlap"):
        split_by_domain([], {"hotel"}, {"hotel", "taxi"})
