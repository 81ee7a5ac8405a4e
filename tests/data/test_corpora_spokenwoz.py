"""SpokenWOZ loader on a small file in the release's shape (the real data is CC BY-NC and not here),
and the consistency of SpokenWOZ's TripPy slot list with our slot naming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from spokentod.data import corpora
from spokentod.data.corpora import multiwoz21, spokenwoz
from spokentod.data.schema import Speaker
from spokentod.errors import DataError, Problem


def words(text, t0, channel):
    """Release-style ASR words: capitalized keys, times in milliseconds."""
    return [
        {
            "Word": w,
            "BeginTime": t0 + 300 * k,
            "EndTime": t0 + 300 * k + 250,
            "Channel": channel,
            "WordIndex": k,
        }
        for k, w in enumerate(text.split())
    ]


def state(**semi):
    meta = {
        "restaurant": {
            "book": {"booked": [], "people": "", "day": "", "time": ""},
            "semi": {"food": "", "pricerange": "", "name": "", "area": ""},
        },
        "profile": {
            "book": {"booked": []},
            "semi": {"name": "", "email": "", "phonenumber": "", "idnumber": "", "platenumber": ""},
        },
    }
    for k, v in semi.items():
        dom, slot = k.split("__")
        meta[dom]["book" if slot in ("people", "day", "time") else "semi"][slot] = v
    return meta


def turn(text, tag, t0, metadata=None):
    return {
        "text": text,
        "tag": tag,
        "metadata": metadata or {},
        "dialog_act": {},
        "span_info": [],
        "words": words(text, t0, 0 if tag == "user" else 1),
    }


def corpus_dir(tmp_path, with_audio=("MUL0001", "SNG0002")):
    text, audio = tmp_path / "text_5700_test", tmp_path / "audio_5700_test"
    text.mkdir()
    audio.mkdir()
    data = {
        "MUL0001": {
            "goal": {"restaurant": {"info": {"food": "indian"}}},
            "log": [
                turn("i want indian food in the centre", "user", 0),
                turn(
                    "sure what is your name",
                    "system",
                    3000,
                    state(restaurant__food="indian", restaurant__area="centre"),
                ),
                turn("james for two people", "user", 6000),
                turn(
                    "booked",
                    "system",
                    9000,
                    state(
                        restaurant__food="indian",
                        restaurant__area="centre",
                        profile__name="james",
                        restaurant__people="2",
                    ),
                ),
            ],
        },
        "SNG0002": {"goal": {}, "log": [turn("hello", "user", 0), turn("hi", "system", 1000, state())]},
    }
    (text / "data.json").write_text(json.dumps(data))
    for did in with_audio:  # one stereo 8 kHz recording per dialogue, as released
        sf.write(audio / f"{did}.wav", np.zeros((8000 * 12, 2), dtype="float32"), 8000)
    return tmp_path


def test_load_release_layout(tmp_path):
    root = corpus_dir(tmp_path)
    ds = spokenwoz.load(root)
    assert [d.id for d in ds] == ["MUL0001", "SNG0002"] and all(d.source == "spokenwoz" for d in ds)
    d = ds[0]
    assert d.metadata["audio"] == {
        "path": str((root / "audio_5700_test/MUL0001.wav").resolve()),
        "sample_rate": 8000,
        "duration": 12.0,
    }
    assert [t.speaker for t in d.turns] == [Speaker.user, Speaker.agent] * 2
    assert d.user_turns[0].state == {"restaurant": {"food": "indian", "area": "centre"}}
    assert d.user_turns[1].state == {
        "restaurant": {"food": "indian", "area": "centre", "book people": "2"},
        "profile": {"name": "james"},
    }
    t = d.turns[2]
    assert t.metadata["words"][0] == {"word": "james", "begin": 6.0, "end": 6.25, "channel": 0, "index": 0}
    assert t.metadata["audio_span"] == [6.0, 7.15]
    assert ds[1].user_turns[0].state == {}


def test_paths_and_detect(tmp_path):
    root = corpus_dir(tmp_path)
    for p in (root, root / "text_5700_test", root / "text_5700_test/data.json"):
        assert corpora.detect(p) == "spokenwoz"
        assert len(spokenwoz.load(p)) == 2
    assert "audio" not in spokenwoz.load(root, audio_dir=False)[0].metadata


def test_missing_recording_strict_and_lenient(tmp_path):
    root = corpus_dir(tmp_path, with_audio=("MUL0001",))
    with pytest.raises(DataError) as e:
        spokenwoz.load(root)
    assert (e.value.problems[0].record, e.value.problems[0].field) == ("SNG0002", "audio")
    problems: list[Problem] = []
    assert [d.id for d in spokenwoz.load(root, lenient=True, problems=problems)] == ["MUL0001"]
    assert len(problems) == 1 and "recording not found" in problems[0].message


def test_bad_words_and_empty_dialogue(tmp_path):
    text = tmp_path / "data.json"
    good = {"goal": {}, "log": [turn("hello", "user", 0), turn("hi", "system", 500, state())]}
    bad = {"goal": {}, "log": [{**turn("hello", "user", 0), "words": [{"Word": "hello"}]}]}
    text.write_text(json.dumps({"A": good, "B": bad, "C": {"goal": {}, "log": []}}))
    with pytest.raises(DataError) as e:
        spokenwoz.load(text, audio_dir=False)
    assert (e.value.problems[0].record, e.value.problems[0].field) == ("B", "log.0.words.0")
    problems: list[Problem] = []
    assert [d.id for d in spokenwoz.load(text, lenient=True, problems=problems, audio_dir=False)] == ["A"]
    assert [(p.record, p.field) for p in problems] == [("B", "log.0.words.0"), ("C", "log")]
    text.write_text("{")
    with pytest.raises(DataError, match="malformed JSON"):
        spokenwoz.load(text)


def test_trippy_slot_list_matches_our_naming(data_dir):
    """SpokenWOZ's TripPy config lists its 36 slots as "domain-slot": each must already be in our
    canonical naming, and the 31 MultiWOZ ones must be exactly the slots the MultiWOZ loader produces."""
    slots = json.loads((data_dir / "spokenwoz/trippy_config.json").read_text())["slots"]
    assert len(slots) == 36
    mapped = [multiwoz21.split_slot(s) for s in slots]
    assert [f"{d}-{s}" for d, s in mapped] == slots  # naming is the identity on TripPy's names
    profile = {s for d, s in mapped if d == "profile"}
    assert profile == {"name", "email", "phonenumber", "idnumber", "platenumber"}
    mwz = {(d, s) for d, s in mapped if d != "profile"}
    seen = {
        (dom, s)
        for d in multiwoz21.load(data_dir / "multiwoz/mwz21_convlab2/val.json")
        for t in d.user_turns
        for dom, v in (t.state or {}).items()
        for s in v
    }
    # TripPy leaves out the police and bus domains (as MultiWOZ evaluations usually do)
    assert mwz == {x for x in seen if x[0] not in {"police", "bus"}}
