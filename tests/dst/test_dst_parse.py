"""Reading model output: clean JSON, and every kind of repair (prose, fences, truncation, quotes, types)."""

from __future__ import annotations

import json

import pytest

from spokentod.dst.data.examples import target_json
from spokentod.dst.infer.parse import parse_output

GOOD = {"hotel": {"area": "north", "stars": "4"}}
JUNK_VALUES = ('{"transcript": "a hotel", "state": {"hotel": {"area": "north", "stars": "4", "name": null, '
               '"type": {"x": 1}, "parking": true, "food": ["a"]}, "taxi": "junk"}}')


@pytest.mark.parametrize("text, transcript, state", [
    ('Sure! Here it is: {"transcript": "a hotel", "state": {"hotel": {"area": "north", "stars": "4"}}} Bye.',
     "a hotel", GOOD),
    ('```json\n{"transcript": "a hotel", "state": {"hotel": {"area": "north", "stars": "4"}}}\n```',
     "a hotel", GOOD),
    ('Format: {state}. {"transcript": "a hotel", "state": {"hotel": {"area": "north", "stars": "4"}}}',
     "a hotel", GOOD),
    ('{"transcript": "a hotel", "state": {"hotel": {"area": "north", "stars": "4",},},}', "a hotel", GOOD),
    ("{'transcript': 'a hotel', 'state': {'hotel': {'area': 'north', 'stars': '4'}}}", "a hotel", GOOD),
    ('{"transcript": "a hotel", "state": {"hotel": {"area": "north", "stars": 4}}}', "a hotel", GOOD),
    (JUNK_VALUES, "a hotel", GOOD),
    ('{"transcript": "a hotel", "state": {"hotel": {"area": "north", "stars": "4", "pri', "a hotel", GOOD),
    ('{"transcript": "a hotel", "state": {"hotel": {"area": "nor', "a hotel", {"hotel": {"area": "nor"}}),
    ('{"transcript": "a ho', "a ho", {}),
    ('{"state": {"hotel": {"area": "north", "stars": "4"}}}', "", GOOD),
    ('{"transcript": "a hotel"}', "a hotel", {}),
    ('{"transcript": 42, "state": {}}', "42", {}),
    ('{transcript: "a hotel", state: {hotel: {area: north, stars: 4}}}', "a hotel", GOOD),
    ('{"transcript": "caf\\u00e9 \\"x\\"", "state": {}', 'café "x"', {}),
])
def test_parse_output_repairs(text, transcript, state):
    p = parse_output(text)
    assert (p.transcript, p.state, p.repaired, p.error) == (transcript, state, True, None)


@pytest.mark.parametrize("text", ["", "I do not know.", "{}", '{"foo": 1}', "{", "[1, 2]", None,
                                  '{"transcript": null, "state": "none"}', "[" * 5000 + "{" * 5000])
def test_parse_output_nothing_usable(text):
    p = parse_output(text)
    assert p.transcript == "" and p.state == {} and p.error


def test_parse_output_never_raises_on_any_truncation():
    state = {"hotel": {"pricerange": "cheap", "area": "north"}, "taxi": {"leaveat": "17:15"}}
    target = target_json("I'd like a cheap hotel, {please}", state)
    for n in range(len(target) + 1):
        p = parse_output(target[:n])
        assert isinstance(p.state, dict) and isinstance(p.transcript, str)
        assert all(isinstance(v, str) for slots in p.state.values() for v in slots.values())
        if n > target.index('", "state"'):
            assert p.transcript == "I'd like a cheap hotel, {please}" and p.error is None
        assert p.repaired == (n < len(target)) or p.error
    assert parse_output(target).state == json.loads(target)["state"]


