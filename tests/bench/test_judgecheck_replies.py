"""The replies of known quality `judge-check` scores: each corruption differs from gold in the way it claims,
the same seed gives the same replies, and the memory corruption changes the detail the user gave."""

from __future__ import annotations

import pytest

from spokentod.bench.judgecheck import details
from spokentod.bench.judgecheck.replies import CORRUPTIONS, FILLERS_V1, build, eligible_turns
from spokentod.data.schema import Dialogue, Intent, Speaker, make_turns
from spokentod.data.source import DialogueSource, load_dialogues
from spokentod.metrics.judge_free import GENERIC_V1


@pytest.fixture(scope="module")
def demo():
    return load_dialogues(DialogueSource(corpus="demo"))[0]


@pytest.fixture(scope="module")
def salesbot(data_dir):
    return load_dialogues(DialogueSource(corpus="salesbot2", path=str(data_dir / "salesbot/salesbot2/MSGD_dataset.json"),
                                         limit=8))[0]


def _texts(built):
    return [(c.kind, c.dialogue_id, c.turn, c.text, sorted(c.info.items())) for c in built.candidates]


@pytest.mark.parametrize("corpus", ["demo", "salesbot"])
def test_each_corruption_differs_from_gold_as_it_claims(corpus, request):
    dialogues = request.getfixturevalue(corpus)
    built = build(dialogues, positions_per_dialogue=3, seed=0)
    by_id = {d.id: d for d in dialogues}
    gold = {(c.dialogue_id, c.turn): c.text for c in built.by_kind("gold")}
    assert len(gold) == len(built.positions) > 0
    for c in built.candidates:
        d, g = by_id[c.dialogue_id], gold[(c.dialogue_id, c.turn)]
        assert d.turns[c.turn].speaker == Speaker.user and d.turns[c.turn + 1].text.strip() == g
        if c.kind == "gold":
            continue
        assert c.text.strip() and c.text != g, (c.kind, c.text)
        if c.kind == "off_topic":
            donor = by_id[c.info["donor"]]
            assert donor.id != d.id and c.text in [t.text.strip() for t in donor.turns if t.speaker == Speaker.agent]
        elif c.kind == "repeat":
            assert c.text == [t.text.strip() for t in d.turns[: c.turn] if t.speaker == Speaker.agent][-1]
        elif c.kind == "generic":
            assert c.text in FILLERS_V1 and c.text not in GENERIC_V1  # not the genericness metric's own list
    # every position has every corruption, or a reason why not
    for kind in CORRUPTIONS:
        built_here = {(c.dialogue_id, c.turn) for c in built.by_kind(kind)}
        skipped = {(s["dialogue_id"], s["turn"]) for s in built.skipped if s["kind"] == kind}
        assert built_here | skipped == set(gold) and not built_here & skipped
        assert all(s["reason"] for s in built.skipped)


def test_memory_corruption_changes_the_detail_the_user_gave(demo, salesbot):
    memory = []
    for dialogues in (demo, salesbot):
        by_id = {d.id: d for d in dialogues}
        for c in build(dialogues, 3, 0).by_kind("memory"):
            memory.append(c.info["variant"])
            d = by_id[c.dialogue_id]
            said, new = c.info["user_said"], c.info["replaced_by"]
            user_turn = d.turns[c.info["user_turn"]]
            assert user_turn.speaker == Speaker.user and c.info["user_turn"] <= c.turn
            assert details.mentions(user_turn.text, said)
            so_far = "\n".join(t.text for t in d.turns[: c.turn + 2])  # the dialogue and the gold reply
            assert not details.mentions(so_far, new), "the wrong value must contradict, not repeat, the dialogue"
            assert details.mentions(c.text, new)
            gold = d.turns[c.turn + 1].text.strip()
            if c.info["variant"] == "swap":  # the gold reply with the detail replaced, nothing else
                assert details.mentions(gold, said) and not details.mentions(c.text, said)
                assert details.swap(gold, said, new) == c.text
            else:  # the gold reply, then the user's own sentence said back with the wrong value
                assert c.text.startswith(gold) and "you said" in c.text[len(gold):]
    assert {"swap", "recall"} <= set(memory) and len(memory) >= 20


def test_same_seed_same_replies_other_seed_other_choices(demo):
    a, b, c = build(demo, 2, seed=0), build(demo, 2, seed=0), build(demo, 2, seed=1)
    assert _texts(a) == _texts(b) and a.skipped == b.skipped
    assert _texts(a) != _texts(c)
    # positions depend on (seed, dialogue) only: loading more dialogues keeps the first ones' positions
    small = build(demo[:3], 2, seed=0)
    assert small.positions == [p for p in a.positions if p.dialogue_id in {d.id for d in demo[:3]}]


def test_eligible_positions_and_reasons_when_nothing_can_be_built():
    turns = make_turns([(Speaker.user, "Hi."), (Speaker.agent, "Hello! How are you?"),
                        (Speaker.user, "Fine, thanks."), (Speaker.agent, "Glad to hear it.")])
    d = Dialogue(id="one", source="t", intent=Intent(type="Chat"), turns=turns)
    assert eligible_turns(d) == [2]  # turn 0 has no earlier agent turn to repeat
    built = build([d], 3, 0)
    reasons = {s["kind"]: s["reason"] for s in built.skipped}
    assert set(reasons) == {"off_topic", "memory"}
    assert "another dialogue" in reasons["off_topic"] or "other dialogue" in reasons["off_topic"]
    assert "detail" in reasons["memory"]


def test_detail_helpers():
    assert details.swap("Book an Italian place in San Jose.", "Italian", "Thai") == "Book a Thai place in San Jose."
    assert details.swap("an adventure film", "adventure", "pop") == "a pop film"
    assert details.restate("Yes, I live in San Jose with my wife.", "San Jose", "Fresno") == \
        "you live in Fresno with your wife"
    assert details.restate("Do you know San Jose?", "San Jose", "Fresno") is None  # a question states nothing
    found = details.find_details(make_dialogue_with("We are 4 people, at 7 pm on Friday."), 0, {})
    assert {(x.kind, x.value) for x in found} == {("number", "4"), ("time", "7 pm"), ("weekday", "Friday")}


def make_dialogue_with(text: str) -> Dialogue:
    return Dialogue(id="x", source="t", turns=make_turns([(Speaker.user, text), (Speaker.agent, "OK.")]))
