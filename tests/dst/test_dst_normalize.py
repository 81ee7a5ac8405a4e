"""One hand-built case per normalization rule (see the rule list in spokentod.dst.data.normalize)."""

from __future__ import annotations

import pytest

from spokentod.dst.data import normalize as N
from spokentod.dst.data import ontology as O


def nv(domain, slot, value, **policy):
    return N.normalize_value(domain, slot, value, N.Policy(**policy))


@pytest.mark.parametrize("raw,expected", [
    ("arriveBy", "arriveby"), ("arrive by", "arriveby"), ("arrive_by", "arriveby"),  # S1
    ("price range", "pricerange"), ("leaveAt", "leaveat"),
    ("hotel-pricerange", "pricerange"), ("hotel_area", "area"),  # S2
    ("book people", "people"), ("bookpeople", "people"), ("hotel-bookday", "day"),  # S3
    ("book_stay", "stay"),
    ("leave", "leaveat"), ("arrive", "arriveby"), ("depart", "departure"), ("dest", "destination"),  # S4
])
def test_slot_names(raw, expected):
    assert N.canonical_slot("hotel", raw) == expected


def test_slot_name_rules_leave_other_names_alone():
    assert N.canonical_slot("restaurants_1", "number_of_seats") == "numberofseats"
    assert N.canonical_slot("hotel", "booking") == "booking"  # only "book" + a booking slot loses the prefix
    assert N.canonical_slot("flights_1", "price") == "price"  # S4 is for MultiWOZ domains only
    assert N.canonical_domain(" Restaurants_1 ") == "restaurants_1"


def test_v1_case_and_whitespace():
    assert nv("hotel", "area", "  CENTRE ") == "centre"
    assert N.basic("  Pizza   Hut ") == "pizza hut"


def test_v2_empty_none_dontcare():
    for empty in ("", "not mentioned", "Not Mentioned ", "not given"):
        assert nv("hotel", "area", empty) is None
    assert nv("hotel", "area", "none") is None
    assert nv("hotel", "area", "none", none="keep") == "none"
    for dc in ("dontcare", "don't care", "do n't care", "dont care", "does not matter", "no preference"):
        assert nv("hotel", "area", dc) == "dontcare"
        assert nv("hotel", "area", dc, dontcare="drop") is None
    with pytest.raises(ValueError):
        N.Policy(dontcare="maybe")


def test_v3_tokenization():
    tokenized = nv("taxi", "departure", "saint john 's college .")
    assert tokenized == nv("taxi", "departure", "Saint John's College")


def test_v4_ampersand():
    assert nv("restaurant", "name", "frankie & bennys") == "frankie and bennys"


def test_v5_apostrophes_and_hyphens():
    assert nv("attraction", "name", "christ's college") == "christs college"
    assert nv("attraction", "name", "queens' college") == "queens college"
    assert nv("hotel", "name", "alpha-milton guest house") == nv("hotel", "name", "alpha milton guesthouse")


def test_v6_bed_and_breakfast():
    for form in ("finches bed and breakfast", "finches bed & breakfast", "finches b & b", "finches b&b"):
        assert nv("hotel", "name", form) == "finches b and b"


def test_v7_compounds():
    assert nv("hotel", "type", "guest house") == "guesthouse"
    assert nv("attraction", "type", "night club") == "nightclub"
    assert nv("attraction", "type", "swimming pool") == "swimmingpool"
    assert nv("attraction", "type", "mutliple sports") == "multiple sports"  # the DB's typo


def test_v8_spelling():
    assert nv("hotel", "area", "center") == "centre"
    assert nv("attraction", "type", "theater") == "theatre"


def test_v9_leading_the_only_for_names():
    assert nv("hotel", "name", "the lensfield hotel") == nv("hotel", "name", "lensfield hotel")
    assert nv("taxi", "destination", "The Junction") == "junction"
    assert nv("restaurant", "food", "the americas") == "the americas"  # not a name slot


@pytest.mark.parametrize("raw,expected", [
    ("17:15", "17:15"), ("5pm", "17:00"), ("5 p.m.", "17:00"), ("5:30 pm", "17:30"), ("5.30pm", "17:30"),
    ("17.30", "17:30"), ("1730", "17:30"), ("9:05", "09:05"), ("9", "09:00"), ("after 17:00", "17:00"),
    ("by 5:30 pm", "17:30"), ("12 am", "00:00"), ("12pm", "12:00"), ("noon", "12:00"), ("midnight", "00:00"),
    ("24:30", "24:30"), ("morning", "morning"), ("17:75", "17:75"),
])
def test_v10_times(raw, expected):
    assert nv("train", "leaveat", raw) == expected


def test_v10_only_time_slots():
    assert N.slot_kind("pickup_time") == "time" and nv("ridesharing_1", "pickuptime", "6 pm") == "18:00"
    assert nv("hotel", "stay", "5") == "5"  # a bare number in a count slot is not a clock time


def test_v11_counts():
    assert nv("hotel", "people", "two") == "2"
    assert nv("hotel", "stay", "3 nights") == "3"
    assert nv("hotel", "stars", "4 star") == "4"
    assert nv("restaurants_1", "numberofseats", "Four") == "4"
    assert nv("hotel", "area", "two") == "two"  # not a count slot


def test_v12_free_means_yes():
    assert nv("hotel", "parking", "free") == "yes"
    assert nv("hotel", "internet", "True") == "yes"
    assert nv("hotel", "internet", "no") == "no"
    assert nv("hotel", "area", "free") == "free"


def test_v13_aliases():
    assert nv("restaurant", "food", "portugese") == "portuguese"
    assert nv("hotel", "name", "el shaddia guesthouse") == nv("hotel", "name", "el shaddai")
    assert nv("restaurant", "name", "caffee uno") == nv("restaurant", "name", "cafe uno") == "caffe uno"
    # paraphrases in SpokenWOZ's variant map are not aliases: that would be lenient, not normalization
    assert nv("restaurant", "food", "pizza") == "pizza"
    assert nv("hotel", "area", "downtown") == "downtown"


def test_alternatives():
    assert N.alternatives(["a", "b|c"]) == ["a", "b", "c"]
    assert N.alternatives("a|b") == ["a", "b"]
    assert N.alternatives(None) == []


def test_normalization_never_merges_two_db_values():
    """Rules apply to both sides, so the only way they can hurt is by merging two distinct DB entities."""
    merged = set()
    for d, slots in O.multiwoz().values.items():
        for s, vals in slots.items():
            if N.slot_kind(s) == "time":
                continue
            seen: dict[str, str] = {}
            for v in sorted({N.basic(x) for x in vals}):
                n = nv(d, s, v)
                if n in seen:
                    merged.add((d, s, seen[n], v))
                seen[n] = v
    assert merged == {("attraction", "type", "multiple sports", "mutliple sports"),  # the DB's typo
                      ("hotel", "internet", "free", "yes"), ("hotel", "parking", "free", "yes")}  # V12


def test_shipped_tables_are_derived_from_shared_data(data_dir, tmp_path):
    """The tables in resources/ are exactly what build_resources derives (nothing hand-edited)."""
    import json

    O.build_resources(data_dir, tmp_path)
    for name in ("text_tables.json", "multiwoz_db.json", "aliases.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((O.RESOURCES / name).read_text()), name
    assert nv("restaurant", "food", "portugese") == "portuguese"  # caches were reset to the shipped tables
