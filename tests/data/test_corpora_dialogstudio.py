"""DialogStudio unified format: rows → turns, state from each kind of side information, errors.
The file is written here in the format of DialogStudio's converted_examples.json (MultiWOZ 2.1 and 2.2)."""

from __future__ import annotations

import json

import pytest

from spokentod.data import corpora
from spokentod.data.corpora import dialogstudio
from spokentod.data.schema import Speaker
from spokentod.errors import DataError, Problem

META_21 = {  # MultiWOZ 2.1 system-side metadata: the state after the user's turn
    "hotel": {
        "book": {"booked": [], "stay": "", "day": "", "people": ""},
        "semi": {
            "name": "not mentioned",
            "area": "not mentioned",
            "parking": "yes",
            "pricerange": "cheap",
            "stars": "",
            "internet": "",
            "type": "hotel",
        },
    },
    "taxi": {
        "book": {"booked": []},
        "semi": {"leaveAt": "", "destination": "", "departure": "", "arriveBy": ""},
    },
}


def row(user, system, user_info=None, system_info=None, **extra):
    return {
        "turn id": 1,
        "user utterance": user,
        "system response": system,
        "dialog history": "",
        "original user side information": user_info or {},
        "original system side information": system_info or {},
        **extra,
    }


def unified():
    return {
        "MultiWOZ_2.1--train--1": {
            "original dialog id": "SNG01856.json",
            "dialog index": 1,
            "original dialog info": {"goal": {"hotel": {}}},
            "log": [
                row(
                    "no , i just need it cheap . oh , and i need parking",
                    "I found 1 cheap hotel.",
                    {"metadata": {}, "dialog_act": {"Hotel-Inform": [["Parking", "yes"]]}, "span_info": []},
                    {
                        "metadata": META_21,
                        "dialog_act": {"Booking-Inform": [["none", "none"]]},
                        "span_info": [],
                    },
                    dst="hotel parking yes",
                    intent="hotel-inform",
                    **{"dst accumulated": "hotel parking yes , hotel pricerange cheap , hotel type hotel"},
                )
            ],
            "external knowledge": "( hotel : ( name : ashley hotel ) )",
            "prompt": ["This is a bot ..."],
        },
        "MULTIWOZ2_2--train--1": {
            "original dialog id": "SSNG0007.json",
            "dialog index": 1,
            "original dialog info": {"services": ["restaurant"]},
            "log": [
                row(
                    "I need a table for 4 at 15:00 on wednesday please.",
                    "Booked, reference OCNH3CJJ.",
                    {
                        "frames": [
                            {
                                "actions": [],
                                "service": "restaurant",
                                "slots": [
                                    {
                                        "exclusive_end": 30,
                                        "slot": "restaurant-booktime",
                                        "start": 25,
                                        "value": "15:00",
                                    }
                                ],
                                "state": {
                                    "active_intent": "book_restaurant",
                                    "requested_slots": [],
                                    "slot_values": {
                                        "restaurant-bookday": ["wednesday"],
                                        "restaurant-bookpeople": ["4"],
                                        "restaurant-booktime": ["15:00"],
                                    },
                                },
                            },
                            {
                                "actions": [],
                                "service": "taxi",
                                "slots": [],
                                "state": {"active_intent": "NONE", "requested_slots": [], "slot_values": {}},
                            },
                        ]
                    },
                    intent="book_restaurant",
                )
            ],
        },
        "KVRET--test--7": {
            "original dialog id": "x7",
            "dialog index": 7,
            "original dialog info": {},
            "log": [
                row("", "Hello, how can I help?"),
                row(
                    "book it for tuesday",
                    "ok",
                    **{"dst accumulated": "hotel book day tuesday , hotel price range cheap"},
                ),
                row("what is the weather", "sunny", **{"dst accumulated": "weather location paris"}),
            ],
        },
    }


def write(tmp_path, obj):
    p = tmp_path / "converted_examples.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_unified_format(tmp_path):
    p = write(tmp_path, unified())
    assert corpora.detect(p) == "dialogstudio"
    a, b, c = dialogstudio.load(p)
    assert (a.id, a.source, a.metadata["dataset"], a.metadata["split"], a.metadata["original_id"]) == (
        "MultiWOZ_2.1--train--1",
        "dialogstudio",
        "MultiWOZ_2.1",
        "train",
        "SNG01856.json",
    )
    assert [t.speaker for t in a.turns] == [Speaker.user, Speaker.agent]
    assert a.turns[0].text == "no, i just need it cheap. oh, and i need parking"
    # MultiWOZ 2.1: state from the system side's metadata, in the multiwoz21 naming
    assert a.turns[0].state == {"hotel": {"parking": "yes", "pricerange": "cheap", "type": "hotel"}}
    assert a.turns[0].acts == {"Hotel-Inform": [["Parking", "yes"]]}
    assert a.turns[0].metadata["intent"] == "hotel-inform"
    assert a.turns[1].acts == {"Booking-Inform": [["none", "none"]]} and a.turns[1].state is None
    assert a.metadata["external_knowledge"].startswith("( hotel") and a.metadata["prompt"]
    # MultiWOZ 2.2: state from the user side's frames
    assert b.turns[0].state == {
        "restaurant": {"book day": "wednesday", "book people": "4", "book time": "15:00"}
    }
    assert b.turns[0].metadata["active_intents"] == {"restaurant": "book_restaurant"}
    # a system-initiated opening: the empty user side is not a turn, and is recorded
    assert c.turns[0].speaker == Speaker.agent and c.metadata["empty_turns_dropped"] == [0]
    # "dst accumulated" is parsed only when its domains are MultiWOZ's
    assert c.turns[1].state == {"hotel": {"book day": "tuesday", "pricerange": "cheap"}}
    assert c.turns[3].state is None and c.turns[3].metadata["dst_accumulated"] == "weather location paris"


def test_parse_dst_string():
    assert dialogstudio.parse_dst_string(
        "train arrive by 10:00 , train book people 2 , taxi leave at 5 pm"
    ) == {"train": {"arriveby": "10:00", "book people": "2"}, "taxi": {"leaveat": "5 pm"}}
    assert dialogstudio.parse_dst_string("movie name jaws") is None


def test_errors_and_lenient(tmp_path):
    data = unified()
    data["Bad--train--1"] = {"log": [{"user utterance": "hi"}]}
    data["Bad--train--2"] = {"log": []}
    data["Bad--train--3"] = {"log": [row("", "")]}
    p = write(tmp_path, data)
    with pytest.raises(DataError) as e:
        dialogstudio.load(p)
    assert (e.value.problems[0].file, e.value.problems[0].record, e.value.problems[0].field) == (
        str(p),
        "Bad--train--1",
        "log.0.system response",
    )
    problems: list[Problem] = []
    assert len(dialogstudio.load(p, lenient=True, problems=problems)) == 3
    assert [(x.record, x.field) for x in problems] == [
        ("Bad--train--1", "log.0.system response"),
        ("Bad--train--2", "log"),
        ("Bad--train--3", "log"),
    ]
