"""SalesBot 2.0 ShareGPT format: tags out of the text, phases, the <TOD> hand-off, errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from spokentod.data.corpora import salesbot2_sharegpt as sharegpt
from spokentod.data.schema import Phase, Speaker
from spokentod.errors import DataError, Problem


@pytest.fixture(scope="module")
def test_set(data_dir):
    return sharegpt.load(data_dir / "salesbot/salesbot2/test_tod_in_the_end.json")


def test_counts(test_set):
    assert len(test_set) == 626
    assert sum(d.metadata["tod_handoff"] for d in test_set) == 621
    # 6857 messages in the file = our turns + the 621 <TOD> markers, which are not turns
    assert sum(len(d.turns) for d in test_set) + 621 == 6857
    assert Counter(d.intent.type if d.intent else None for d in test_set) == {
        "FindAttraction": 137,
        "FindRestaurants": 128,
        "GetTransportation": 124,
        "FindMovie": 106,
        "LookupMusic": 44,
        "FindEvents": 37,
        "SearchHotel": 35,
        "SearchRoundtripFlights": 6,
        "SearchOnewayFlight": 3,
        None: 6,
    }


def test_tags_removed_and_kept_in_metadata(test_set):
    texts = [t.text for d in test_set for t in d.turns]
    assert not any("<intent>" in x or "</intent>" in x or x == "<TOD>" for x in texts)
    d = next(d for d in test_set if d.id == "merge_0023")
    assert d.turns[1].metadata["intent_tag"] == "None"
    assert d.turns[1].text.endswith("What features are you looking for in a car?")
    assert d.turns[5].metadata["intent_tag"] == "GetTransportation" and d.turns[5].speaker == Speaker.agent
    # the first user turn with a real tag is the transition
    assert d.transition_index == 6 and d.turns[6].speaker == Speaker.user
    assert [t.phase for t in d.turns[:6]] == [Phase.chitchat] * 6
    assert all(t.phase == Phase.task for t in d.turns[7:])
    assert d.intent.type == "GetTransportation"
    assert d.turns[-1].text.startswith("Actually, do you have any cars available")


def test_every_dialogue_has_one_transition(test_set):
    for d in test_set:
        assert len(d.phase_of(Phase.transition)) == 1
        assert d.turns[d.transition_index].speaker == Speaker.user
    inferred = [d for d in test_set if d.metadata.get("transition_inferred")]
    assert len(inferred) == 6 and all(d.intent is None and len(d.turns) == 1 for d in inferred)


# ---- bad input -------------------------------------------------------------------------------------


def _rec(rid, conv):
    return {"id": rid, "conversations": conv}


OK = [
    {"from": "human", "value": "hi"},
    {"from": "gpt", "value": "hello<intent>None</intent>"},
    {"from": "human", "value": "find me a movie<intent>FindMovie</intent>"},
    {"from": "gpt", "value": "<TOD>"},
]


def write(tmp_path, obj):
    p = tmp_path / "sharegpt.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_errors_name_record_and_field(tmp_path):
    cases = [
        (_rec("a", [{"from": "system", "value": "x"}]), "conversations.0.from"),
        (_rec("b", [{"from": "human"}]), "conversations.0.value"),
        (_rec("c", [{"from": "gpt", "value": "<TOD>"}]), "conversations"),
        (_rec("d", [{"from": "human", "value": "<intent>None</intent>"}]), "conversations.0.value"),
        ({"conversations": OK}, "id"),
    ]
    for rec, field in cases:
        with pytest.raises(DataError) as e:
            sharegpt.load(write(tmp_path, [rec]))
        assert e.value.problems[0].field == field


def test_lenient(tmp_path):
    problems: list[Problem] = []
    out = sharegpt.load(write(tmp_path, [_rec("ok", OK), _rec("bad", [])]), lenient=True, problems=problems)
    assert [d.id for d in out] == ["ok"] and out[0].intent.type == "FindMovie"
    assert [t.phase for t in out[0].turns] == [Phase.chitchat, Phase.chitchat, Phase.transition]
    assert [(p.record, p.field) for p in problems] == [("bad", "conversations")]
