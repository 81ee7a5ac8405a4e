"""The two readings of a model's JSON (spokentod/jsonrepair.py): the judge's strict one refuses what it
cannot repair safely, the tracker's forgiving one reads the same text as far as it goes."""

from __future__ import annotations

import pytest

from spokentod.jsonrepair import Number, RepairError, extract_object, loose_object


@pytest.mark.parametrize(("text", "loose"), [
    ('{"a": "x" "b": "y"}', {"a": "x", "b": "y"}),  # a missing comma
    ("{a: north}", {"a": "north"}),  # bare words
    ('{"s": {"hotel": {"area": "nor', {"s": {"hotel": {"area": "nor"}}}),  # cut inside a string
])
def test_what_the_judge_refuses_the_tracker_reads(text, loose):
    with pytest.raises(RepairError):
        extract_object(text, "judge reply")
    obj, end, repaired = loose_object(text, 0)
    assert obj == loose and repaired and end == len(text)


def test_clean_json_is_not_repaired_and_numbers_keep_their_text():
    text = 'prose {"n": 1.50, "m": [2]} more'
    obj, end, repaired = loose_object(text, text.index("{"))
    assert obj == {"n": "1.50", "m": ["2"]} and type(obj["n"]) is Number and not repaired
    assert text[end:] == " more"
    assert extract_object(text)[0] == {"n": 1.5, "m": [2]}  # the judge's numbers are numbers
    with pytest.raises(ValueError, match="no object at position 0"):
        loose_object(text, 0)
