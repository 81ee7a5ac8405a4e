"""SalesBot 2.0 (MSGD original format): phases, transition consistency, intents, errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from spokentod.data import corpora
from spokentod.data.corpora import salesbot2
from spokentod.data.schema import Phase, Speaker
from spokentod.errors import DataError, Problem


@pytest.fixture(scope="module")
def msgd(data_dir):
    return salesbot2.load(data_dir / "salesbot/salesbot2/MSGD_dataset.json")


def by_id(dialogues, did):
    return next(d for d in dialogues if d.id == did)


def test_counts_and_transition_consistency(msgd):
    assert len(msgd) == 100
    assert sum(d.metadata["transition_consistent"] for d in msgd) == 100
    assert all(d.source == "salesbot2" for d in msgd)
    assert corpora.info("salesbot2").multiphase


def test_phases_follow_transition_position(data_dir, msgd):
    raw = {r["id"]: r for r in json.loads((data_dir / "salesbot/salesbot2/MSGD_dataset.json").read_text())}
    for d in msgd:
        t = d.turns[d.transition_index]
        r = raw[d.id]
        assert t.speaker == Speaker.user
        assert "User: " + t.metadata.get("text_raw", t.text) == r["transition_sentence"]["utterance"]
        assert all(x.phase == Phase.chitchat for x in d.turns[: d.transition_index])
        assert all(x.phase == Phase.task for x in d.turns[d.transition_index + 1 :])
        assert d.metadata["chitchat_context_len"] == len(r["chitchat_context"])
        assert len(d.turns) + len(d.metadata.get("empty_turns_dropped", [])) == len(r["dialog"])
    d = by_id(msgd, "merge_0000")
    assert d.transition_index == 4 and d.turns[4].text.startswith("Yes, I've been to New York")
    assert d.intent.type == "FindAttraction" and d.intent.description == "Find attractions to visit"


def test_speakers_come_from_prefixes_not_alternation(msgd):
    d = by_id(msgd, "merge_0003")  # opens with the agent
    assert d.turns[0].speaker == Speaker.agent and d.turns[0].text.startswith("I gained a lot of weig")
    assert d.turns[0].metadata["text_raw"].startswith('"I gained')  # the wrapping quotes were removed
    assert not any(t.text.startswith(("User:", "Agent:")) for d in msgd for t in d.turns)


def test_noisy_intents_normalized_raw_kept(msgd):
    assert Counter(d.intent.type for d in msgd) == {
        "FindAttraction": 25,
        "FindMovie": 23,
        "FindRestaurants": 16,
        "LookupMusic": 13,
        "FindEvents": 10,
        "GetCarsAvailable": 4,
        "SearchHotel": 3,
        "SearchRoundtripFlights": 2,
        "FindBooks": 2,
        "FindDogPlaydate": 1,
        "FindGames": 1,
    }
    assert by_id(msgd, "merge_0047").metadata["intent_raw"] == "FindDogPlaydate."
    assert by_id(msgd, "merge_0008").metadata["intent_raw"].startswith("FindBooks (related to")
    assert "intent_raw" not in by_id(msgd, "merge_0000").metadata


def test_empty_strings_left_out_and_recorded(msgd):
    d = by_id(msgd, "merge_0030")
    assert d.metadata["empty_turns_dropped"] == [1, 3, 5, 7, 9, 11]
    assert d.turns[d.transition_index].text == "Actually, no. I'm not sure where to look."


def test_normalize_intent():
    assert salesbot2.normalize_intent("FindBooks (related to the topic of books)") == "FindBooks"
    assert salesbot2.normalize_intent("FindDogPlaydate.") == "FindDogPlaydate"


# ---- bad input -------------------------------------------------------------------------------------


def _rec(rid, **kw):
    r = {
        "id": rid,
        "intent": {"type": "FindMovie", "description": "d"},
        "transition_sentence": {"utterance": "User: b", "position": 2},
        "chitchat_context": ["User: a"],
        "dialog": ["User: a", "Agent: x", "User: b", "Agent: y"],
    }
    r.update(kw)
    return r


def write(tmp_path, obj):
    p = tmp_path / "msgd.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_errors_name_record_and_field(tmp_path):
    cases = [
        (
            _rec("m1", transition_sentence={"utterance": "User: b", "position": 9}),
            "transition_sentence.position",
        ),
        (_rec("m2", dialog=["User: a", "Bot: x", "User: b"]), "dialog.1"),
        (_rec("m3", dialog=[]), "dialog"),
        ({k: v for k, v in _rec("m4").items() if k != "intent"}, "intent"),
    ]
    for rec, field in cases:
        with pytest.raises(DataError) as e:
            salesbot2.load(write(tmp_path, [rec]))
        assert (e.value.problems[0].record, e.value.problems[0].field) == (rec["id"], field)


def test_lenient_and_inconsistent_transition(tmp_path):
    recs = [
        _rec("ok"),
        _rec("bad", dialog=[]),
        _rec("odd", transition_sentence={"utterance": "User: something else", "position": 2}),
    ]
    problems: list[Problem] = []
    out = salesbot2.load(write(tmp_path, recs), lenient=True, problems=problems)
    assert [d.id for d in out] == ["ok", "odd"]
    assert [d.metadata["transition_consistent"] for d in out] == [True, False]
    assert [(p.record, p.field) for p in problems] == [("bad", "dialog")]
