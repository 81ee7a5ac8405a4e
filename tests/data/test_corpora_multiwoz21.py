"""MultiWOZ 2.1 loader: counts on the real ConvLab-2 files, a turn-by-turn state check, naming, errors."""

from __future__ import annotations

import json

import pytest

from spokentod.data import corpora
from spokentod.data.corpora import multiwoz21
from spokentod.data.corpora.multiwoz21 import canonical_slot, split_slot
from spokentod.data.schema import Speaker
from spokentod.data.text import detokenize
from spokentod.errors import DataError, Problem

# The 30 MultiWOZ slots (TRADE's list) in our naming; every state slot must be one of them.
MWZ_SLOTS = {
    ("attraction", "area"),
    ("attraction", "name"),
    ("attraction", "type"),
    ("hospital", "department"),
    ("hotel", "area"),
    ("hotel", "book day"),
    ("hotel", "book people"),
    ("hotel", "book stay"),
    ("hotel", "internet"),
    ("hotel", "name"),
    ("hotel", "parking"),
    ("hotel", "pricerange"),
    ("hotel", "stars"),
    ("hotel", "type"),
    ("restaurant", "area"),
    ("restaurant", "book day"),
    ("restaurant", "book people"),
    ("restaurant", "book time"),
    ("restaurant", "food"),
    ("restaurant", "name"),
    ("restaurant", "pricerange"),
    ("taxi", "arriveby"),
    ("taxi", "departure"),
    ("taxi", "destination"),
    ("taxi", "leaveat"),
    ("train", "arriveby"),
    ("train", "book people"),
    ("train", "day"),
    ("train", "departure"),
    ("train", "destination"),
    ("train", "leaveat"),
    ("bus", "day"),
    ("bus", "departure"),
    ("bus", "destination"),
    ("bus", "leaveat"),
    ("bus", "arriveby"),
    ("bus", "book people"),
    ("police", "name"),
}


@pytest.fixture(scope="module")
def val(data_dir):
    return multiwoz21.load(data_dir / "multiwoz/mwz21_convlab2/val.json")


@pytest.fixture(scope="module")
def test_split(data_dir):
    return multiwoz21.load(data_dir / "multiwoz/mwz21_convlab2/test.json")


def by_id(dialogues, did):
    return next(d for d in dialogues if d.id == did)


def test_counts_val_and_test(val, test_split):
    assert len(val) == 999
    assert sum(len(d.user_turns) for d in val) == 7365
    assert sum(len(d.turns) for d in val) == 14730
    assert len(test_split) == 1000
    assert sum(len(d.user_turns) for d in test_split) == 7372
    assert len({d.id for d in val} | {d.id for d in test_split}) == 1999
    assert all(d.source == "multiwoz21" for d in val)


def test_sng0073_state_turn_by_turn(test_split):
    """Hand-written from test.json: the state of a user turn is the next system turn's metadata."""
    d = by_id(test_split, "SNG0073")
    taxi = {"destination": "pizza hut fenditton", "departure": "saint johns college"}
    expected = [
        ("I would like a taxi from Saint John's college to Pizza Hut Fen Ditton.", {"taxi": taxi}),
        ("I want to leave after 17:15.", {"taxi": {**taxi, "leaveat": "17:15"}}),
        ("Thank you for all the help! I appreciate it.", {"taxi": {**taxi, "leaveat": "17:15"}}),
        ("No, I am all set. Have a nice day. Bye.", {"taxi": {**taxi, "leaveat": "17:15"}}),
    ]
    assert [(t.text, t.state) for t in d.user_turns] == expected
    assert [t.speaker for t in d.turns] == [Speaker.user, Speaker.agent] * 4
    assert all(t.state is None for t in d.turns if t.speaker == Speaker.agent)
    # "booked" is a booking result, not state: it is kept on the system turn
    assert d.turns[3].metadata["booked"] == {"taxi": [{"phone": "07218068540", "type": "blue honda"}]}
    assert d.turns[0].acts == {
        "Taxi-Inform": [["Dest", "pizza hut fenditton"], ["Depart", "saint johns college"]]
    }
    assert (
        d.turns[0].metadata["text_raw"]
        == "I would like a taxi from Saint John 's college to Pizza Hut Fen Ditton ."
    )


def test_pmul1635_state_turn_by_turn(val):
    """A two-domain dialogue with a booking change, hand-written from val.json (note the annotators'
    "wartworth": the state keeps what the user said, the booking says "warkworth house")."""
    d = by_id(val, "PMUL1635")
    h1 = {"area": "east", "stars": "4"}
    h2 = {**h1, "parking": "yes", "internet": "yes"}
    h3 = {**h2, "name": "wartworth"}
    h4 = {**h3, "book people": "1", "book day": "friday", "book stay": "1"}
    h5 = {**h3, "book people": "3", "book day": "monday", "book stay": "4"}
    t1 = {"destination": "bishops stortford", "day": "friday", "departure": "cambridge"}
    t2 = {**t1, "arriveby": "19:45"}
    t3 = {**t2, "book people": "1"}
    expected = [
        {"hotel": h1},
        {"hotel": h2},
        {"hotel": h3},
        {"hotel": h4},
        {"hotel": h4, "train": t1},
        {"hotel": h4, "train": t2},
        {"hotel": h4, "train": t3},
        {"hotel": h5, "train": t3},
        {"hotel": h5, "train": t3},
    ]
    assert [t.state for t in d.user_turns] == expected
    assert d.user_turns[1].text == "That doesn't matter as long as it has free wifi and parking."
    assert d.metadata["domains"] == ["hotel", "train"]


def test_state_naming_and_empty_values(val, test_split):
    slots = {
        (dom, s)
        for d in val + test_split
        for t in d.user_turns
        for dom, v in (t.state or {}).items()
        for s in v
    }
    assert slots <= MWZ_SLOTS
    values = {x for d in val for t in d.user_turns for v in (t.state or {}).values() for x in v.values()}
    assert not values & {"", "not mentioned", "none"}
    assert "dontcare" in values  # kept: a tracker has to predict it
    assert all(isinstance(t.state, dict) for d in val for t in d.user_turns)


def test_original_format_gives_same_states_and_text(data_dir, val, test_split):
    orig = multiwoz21.load(data_dir / "multiwoz/mwz21_original_format_examples_dialogstudio.json")
    assert [d.id for d in orig] == ["SNG01856", "SNG0129", "PMUL1635", "MUL2168", "SNG0073"]
    assert by_id(orig, "SNG0073").metadata["original_id"] == "SNG0073.json"
    for did, split in (("PMUL1635", val), ("SNG0073", test_split)):
        a, b = by_id(orig, did), by_id(split, did)
        assert [t.state for t in a.turns] == [t.state for t in b.turns]
        assert [t.text for t in a.user_turns] == [t.text for t in b.user_turns]


def test_directory_loads_dialogue_files_only(data_dir):
    # ontology.json, value_set.json ... sit beside val/test.json and are not dialogue files
    assert multiwoz21.dialogue_files(data_dir / "multiwoz/mwz21_convlab2") == [
        data_dir / "multiwoz/mwz21_convlab2/test.json",
        data_dir / "multiwoz/mwz21_convlab2/val.json",
    ]


def test_detect_rejects_the_ontology(data_dir):
    assert not multiwoz21._detect(data_dir / "multiwoz/mwz21_convlab2/ontology.json")


@pytest.mark.parametrize(
    "raw, expected",
    [
        (
            "I would like a taxi from Saint John 's college to Pizza Hut Fen Ditton .",
            "I would like a taxi from Saint John's college to Pizza Hut Fen Ditton.",
        ),
        ("That does n't matter , i 'm fine", "That doesn't matter, i'm fine"),
        ("You 're welcome . Have a nice day !", "You're welcome. Have a nice day!"),
        ("ca n't wo n't I 'd we 've they 'll", "can't won't I'd we've they'll"),
        (
            "Booking was successful . \n Reference number is : BMUKPTG6 .  Can I",
            "Booking was successful. Reference number is: BMUKPTG6. Can I",
        ),
        ("a ( cheap ) place ; 10.1 GBP , 50 %", "a (cheap) place; 10.1 GBP, 50%"),
        (
            "Say 'hi' to Kettle's Yard... ok?",
            "Say 'hi' to Kettle's Yard... ok?",
        ),  # ordinary text is unchanged
    ],
)
def test_detokenize(raw, expected):
    assert detokenize(raw) == expected
    assert detokenize(expected) == expected


@pytest.mark.parametrize(
    "domain, slot, book, expected",
    [
        ("hotel", "pricerange", False, "pricerange"),
        ("taxi", "arriveBy", False, "arriveby"),
        ("train", "leaveAt", False, "leaveat"),
        ("hotel", "people", True, "book people"),
        ("restaurant", "bookday", False, "book day"),
        ("hotel", "book_stay", False, "book stay"),
        ("restaurant", "time", False, "book time"),
        ("train", "day", False, "day"),
        ("train", "price range", False, "pricerange"),
    ],
)
def test_canonical_slot(domain, slot, book, expected):
    assert canonical_slot(domain, slot, book) == expected


def test_split_slot():
    assert split_slot("hotel-book day") == ("hotel", "book day")
    assert split_slot("taxi-arriveBy") == ("taxi", "arriveby")
    with pytest.raises(ValueError):
        split_slot("pricerange")


# ---- bad input -------------------------------------------------------------------------------------


def _turn(text, metadata=None):
    return {"text": text, "metadata": metadata or {}, "dialog_act": {}, "span_info": []}


GOOD = {
    "goal": {},
    "log": [_turn("hi ."), _turn("hello .", {"hotel": {"semi": {"area": "east"}, "book": {"booked": []}}})],
}


def write(tmp_path, obj, name="d.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_missing_field_names_record_and_field(tmp_path):
    p = write(tmp_path, {"OK1": GOOD, "BAD1": {"goal": {}, "log": [{"metadata": {}}]}})
    with pytest.raises(DataError) as e:
        multiwoz21.load(p)
    prob = e.value.problems[0]
    assert (prob.file, prob.record, prob.field) == (str(p), "BAD1", "log.0.text")


def test_empty_dialogue_is_an_error(tmp_path):
    with pytest.raises(DataError) as e:
        multiwoz21.load(write(tmp_path, {"E1": {"goal": {}, "log": []}}))
    assert (e.value.problems[0].record, e.value.problems[0].field) == ("E1", "log")


def test_misaligned_speakers_are_caught(tmp_path):
    bad = {"goal": {}, "log": [_turn("hi", {"hotel": {"semi": {"area": "east"}}}), _turn("hello")]}
    with pytest.raises(DataError, match="misaligned"):
        multiwoz21.load(write(tmp_path, {"M1": bad}))


def test_lenient_skips_and_reports_every_bad_record(tmp_path):
    p = write(
        tmp_path,
        {
            "OK1": GOOD,
            "BAD1": {"goal": {}},
            "BAD2": {"goal": {}, "log": []},
            "BAD3": {"goal": {}, "log": [_turn("x", {"hotel": "oops"})]},
        },
    )
    problems: list[Problem] = []
    out = multiwoz21.load(p, lenient=True, problems=problems)
    assert [d.id for d in out] == ["OK1"]
    assert out[0].user_turns[0].state == {"hotel": {"area": "east"}}
    assert [(x.record, x.field) for x in problems] == [
        ("BAD1", "log"),
        ("BAD2", "log"),
        ("BAD3", "log.0.metadata"),
    ]


def test_empty_utterance_is_left_out_and_recorded(tmp_path):
    d = multiwoz21.load(write(tmp_path, {"X1": {"goal": {}, "log": [*GOOD["log"], _turn("  ")]}}))[0]
    assert len(d.turns) == 2 and d.metadata["empty_turns_dropped"] == [2]


def test_all_corpus_loaders_registered(data_dir):
    ours = {
        "salesbot2": True,
        "salesbot2-sharegpt": True,
        "salesbot1": True,
        "multiwoz21": False,
        "multiwoz22": False,
        "sgd": False,
        "spokenwoz": False,
        "dialogstudio": False,
        "speech-aware-multiwoz": False,
    }
    assert set(ours) <= set(corpora.names())
    assert {n: corpora.info(n).multiphase for n in ours} == ours
    assert (
        len(
            corpora.load("multiwoz21", data_dir / "multiwoz/mwz21_original_format_examples_dialogstudio.json")
        )
        == 5
    )
