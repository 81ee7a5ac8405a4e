"""SGD loader: shard/split/root counts on the real files, carried-over state, schema, errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from spokentod.data.corpora import sgd
from spokentod.data.schema import Speaker
from spokentod.errors import DataError, Problem


@pytest.fixture(scope="module")
def everything(data_dir):
    return sgd.load(data_dir / "sgd")


def by_id(dialogues, did):
    return next(d for d in dialogues if d.id == did)


def test_counts_per_split_and_shard(data_dir, everything):
    assert Counter(d.metadata["split"] for d in everything) == {"train": 1255, "dev": 512, "test": 512}
    assert len({d.id for d in everything}) == 2279  # ids are split-prefixed: SGD restarts 1_00000 per split
    assert len(sgd.load(data_dir / "sgd/train/dialogues_043.json")) == 103
    assert len(sgd.load(data_dir / "sgd/dev")) == 512
    assert sum(len(d.turns) for d in everything) == 20916 + 6994 + 5986 - 1  # minus one empty utterance


def test_first_dev_dialogue(everything):
    d = by_id(everything, "dev_1_00000")
    assert d.metadata["original_id"] == "1_00000" and d.metadata["schema"].endswith("dev/schema.json")
    assert d.intent.type == "ReserveRestaurant"
    assert d.intent.description == "Make a table reservation at a restaurant"
    u = d.user_turns
    assert u[0].state == {"Restaurants_2": {"number_of_seats": "2", "time": "half past 11 in the morning"}}
    assert u[0].metadata["active_intents"] == {"Restaurants_2": "ReserveRestaurant"}
    assert u[1].state["Restaurants_2"]["restaurant_name"] == "Sino"
    # several acceptable values stay a list
    assert u[2].state["Restaurants_2"]["time"] == ["11:30 am", "half past 11 in the morning"]
    assert d.turns[1].speaker == Speaker.agent and d.turns[1].state is None
    assert d.turns[1].acts[0] == {
        "service": "Restaurants_2",
        "act": "REQUEST",
        "canonical_values": [],
        "slot": "restaurant_name",
        "values": [],
    }


def test_state_of_earlier_services_is_carried(everything):
    """train 44_00000 books an event (Events_2) then a bus (Buses_2): the bus turns' frames no longer
    mention Events_2, but its state is still the dialogue's state."""
    d = by_id(everything, "train_44_00000")
    bus = next(t for t in d.user_turns if t.metadata["services_in_turn"] == ["Buses_2"])
    assert bus.state["Events_2"] == {"city": "LAX", "date": "March 4th", "event_name": "Jordan Rakei"}
    assert bus.state["Buses_2"] == {"departure_time": "7:15 in the morning", "destination": "LAX"}


def test_empty_utterance_left_out_and_recorded(everything):
    d = by_id(everything, "test_3_00055")
    assert d.metadata["empty_turns_dropped"] == [15] and len(d.turns) == 15


def test_load_schema(data_dir):
    assert [len(sgd.load_schema(data_dir / f"sgd/{s}")) for s in ("train", "dev", "test")] == [26, 17, 21]
    assert "Restaurants_1" in sgd.load_schema(data_dir / "sgd/train/schema.json")


def test_detect_rejects_multiwoz(data_dir):
    assert not sgd._detect(data_dir / "multiwoz/mwz22/examples_dialogstudio.json")


# ---- bad input -------------------------------------------------------------------------------------


def _dlg(did, turns):
    return {"dialogue_id": did, "services": ["Foo_1"], "turns": turns}


USER = {
    "speaker": "USER",
    "utterance": "Find me a foo.",
    "frames": [
        {
            "service": "Foo_1",
            "slots": [],
            "actions": [],
            "state": {"active_intent": "FindFoo", "requested_slots": [], "slot_values": {"city": ["Paris"]}},
        }
    ],
}


def write(tmp_path, obj):
    p = tmp_path / "dialogues_001.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_missing_field_names_file_record_field(tmp_path):
    p = write(tmp_path, [_dlg("1_1", [USER]), _dlg("1_2", [{"speaker": "USER", "frames": []}])])
    with pytest.raises(DataError) as e:
        sgd.load(p)
    assert (e.value.problems[0].file, e.value.problems[0].record, e.value.problems[0].field) == (
        str(p),
        "1_2",
        "turns.0.utterance",
    )


def test_empty_dialogue_and_bad_speaker(tmp_path):
    p = write(tmp_path, [_dlg("1_1", []), _dlg("1_2", [{**USER, "speaker": "BOT"}]), _dlg("1_3", [USER])])
    with pytest.raises(DataError, match="no turns"):
        sgd.load(p)
    problems: list[Problem] = []
    out = sgd.load(p, lenient=True, problems=problems)
    assert [d.id for d in out] == ["1_3"]  # the folder is not train/dev/test: no split prefix
    assert out[0].user_turns[0].state == {"Foo_1": {"city": "Paris"}}
    assert [(x.record, x.field) for x in problems] == [("1_1", "turns"), ("1_2", "turns.0.speaker")]


def test_not_a_list(tmp_path):
    with pytest.raises(DataError, match="list of dialogues"):
        sgd.load(write(tmp_path, {"dialogue_id": "x"}))
