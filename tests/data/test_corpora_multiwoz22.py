"""MultiWOZ 2.2 loader: the 2.2-format examples, naming shared with multiwoz21, errors."""

from __future__ import annotations

import json

import pytest

from spokentod.data.corpora import multiwoz22
from spokentod.errors import DataError, Problem


@pytest.fixture(scope="module")
def examples(data_dir):
    return multiwoz22.load(data_dir / "multiwoz/mwz22/examples_dialogstudio.json")


def by_id(dialogues, did):
    return next(d for d in dialogues if d.id == did)


def test_counts_and_ids(examples):
    assert [d.id for d in examples] == ["SSNG0007", "SNG1161", "MUL1443", "SNG01678", "MUL1170"]
    assert sum(len(d.turns) for d in examples) == 46
    assert examples[0].metadata["original_id"] == "SSNG0007.json"
    assert all(d.source == "multiwoz22" for d in examples)


def test_state_per_user_turn_in_multiwoz21_naming(examples):
    d = by_id(examples, "SSNG0007")
    base = {"area": "centre", "food": "chinese"}
    booked = {**base, "book day": "wednesday", "book people": "4", "book time": "15:00"}
    assert [t.state for t in d.user_turns] == [
        {"restaurant": base},
        {"restaurant": base},
        {"restaurant": booked},
        {"restaurant": {**booked, "name": "jinling noodle bar"}},
    ]
    assert d.user_turns[2].metadata["active_intents"] == {"restaurant": "book_restaurant"}
    assert all(t.state is None for t in d.turns if t.speaker.value == "agent")


def test_several_gold_values_become_a_list(examples):
    d = by_id(examples, "SNG1161")
    assert d.user_turns[0].state["taxi"]["leaveat"] == ["02:45", "after 02:30"]
    assert by_id(examples, "MUL1443").user_turns[-1].state["train"]["book people"] == "2"


# ---- bad input -------------------------------------------------------------------------------------

USER = {
    "speaker": "USER",
    "turn_id": "0",
    "utterance": "A cheap hotel please.",
    "frames": [
        {
            "service": "hotel",
            "slots": [],
            "actions": [],
            "state": {
                "active_intent": "find_hotel",
                "requested_slots": [],
                "slot_values": {"hotel-pricerange": ["cheap"]},
            },
        }
    ],
}


def write(tmp_path, obj):
    p = tmp_path / "dialogues_001.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_errors_name_file_record_field_and_lenient_skips(tmp_path):
    p = write(
        tmp_path,
        [
            {"dialogue_id": "A.json", "services": ["hotel"], "turns": [USER]},
            {"dialogue_id": "B.json", "services": ["hotel"], "turns": []},
            {"dialogue_id": "C.json", "services": ["hotel"], "turns": [{**USER, "frames": [{"slots": []}]}]},
        ],
    )
    with pytest.raises(DataError) as e:
        multiwoz22.load(p)
    assert (e.value.problems[0].file, e.value.problems[0].record, e.value.problems[0].field) == (
        str(p),
        "B.json",
        "turns",
    )
    problems: list[Problem] = []
    out = multiwoz22.load(p, lenient=True, problems=problems)
    assert [d.id for d in out] == ["A"] and out[0].user_turns[0].state == {"hotel": {"pricerange": "cheap"}}
    assert [(x.record, x.field) for x in problems] == [
        ("B.json", "turns"),
        ("C.json", "turns.0.frames.0.service"),
    ]
