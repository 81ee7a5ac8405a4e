"""carry_state: the previous state in the prompt and the turn's update as the target. The update is exact on
real MultiWOZ dialogues (applying it to the previous state gives the state back), training targets and
prompts use it, and tracking carries the tracker's own predicted state from turn to turn (gold in gold mode)."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
import torch

from spokentod.data import corpora
from spokentod.dst.data.examples import (
    Example,
    apply_update,
    compact_state,
    make_examples,
    state_update,
    target_json,
)
from spokentod.dst.infer.track import TrackStats, TurnPrediction, previous_state, track
from spokentod.dst.model.speechdst import SpeechDST

MWZ = "../shared/data/multiwoz/mwz21_convlab2/val.json"


def test_update_round_trips_on_multiwoz_and_chains_the_previous_state():
    dialogues = list(corpora.load("multiwoz21", MWZ))[:120]
    exs, _ = make_examples(dialogues, "text")
    by_dialogue: dict[str, list[Example]] = {}
    for e in exs:
        by_dialogue.setdefault(e.dialogue_id, []).append(e)
    changed = 0
    for group in by_dialogue.values():
        assert group[0].prev_state == {} or group[0].ordinal > 0
        for a, b in pairwise(group):
            if b.ordinal == a.ordinal + 1:
                assert b.prev_state == a.state  # the gold state after the previous user turn
        for e in group:
            up = state_update(e.prev_state, e.state)
            assert apply_update(e.prev_state, up) == e.state, e.id
            changed += sum(map(len, up.values()))
    total = sum(sum(map(len, e.state.values())) for e in exs)
    assert changed < total / 2  # the update is much shorter than the state: the point of carrying it


def test_update_marks_removed_slots():
    prev = {"hotel": {"area": "north", "stars": "4"}, "taxi": {"leaveat": "10:00"}}
    new = {"hotel": {"area": "south", "stars": "4"}}
    up = state_update(prev, new)
    assert up == {"hotel": {"area": "south"}, "taxi": {"leaveat": "none"}}
    assert apply_update(prev, up) == new
    assert compact_state(new) == '{"hotel":{"area":"south","stars":"4"}}'


class Updates(SpeechDST):
    """Answers each turn with an update that adds one slot named after the turn's ordinal (read from the
    prompt's history length), so a carried state grows turn by turn; records its prompts."""

    prompts: list[str]

    def generate(self, prefix, lengths, prompts, **kw):
        self.prompts += prompts
        out = []
        for p in prompts:
            k = p.count("user: ")  # earlier user turns in the (unlimited) history
            out.append(json.dumps({"transcript": f"t{k}", "state": {"hotel": {f"s{k}": str(k)}}}))
        return out


def _dialogue(n: int) -> list[Example]:
    exs, history, state = [], [], {}
    for k in range(n):
        prev = dict(state)
        state = {"hotel": {**state.get("hotel", {}), f"g{k}": "x"}}
        exs.append(Example("d", 2 * k, k, tuple(history), f"user {k}", state, None, None, ("hotel",),
                           {d: dict(v) for d, v in prev.items()}))
        history += [("user", f"user {k}"), ("agent", f"agent {k}")]
    return exs


@pytest.mark.parametrize("mode", ["predicted", "gold"])
def test_tracking_carries_the_predicted_state(tiny_dst_config, mode):
    torch.manual_seed(0)
    model = Updates.build(tiny_dst_config().model_copy(update={"carry_state": True}), feature_dim=8)
    model.prompts = []
    stats = TrackStats()
    preds = track(model, [_dialogue(3)], "text_direct", history=mode, max_new_tokens=2, progress=False,
                  stats=stats)
    if mode == "predicted":  # the tracker's own updates accumulate
        assert [p.state for p in preds] == [{"hotel": {"s0": "0"}}, {"hotel": {"s0": "0", "s1": "1"}},
                                            {"hotel": {"s0": "0", "s1": "1", "s2": "2"}}]
        assert 'state: {"hotel":{"s0":"0","s1":"1"}}' in model.prompts[2]
    else:  # the gold previous state each turn, plus the turn's update
        assert preds[2].state == {"hotel": {"g0": "x", "g1": "x", "s2": "2"}}
        assert 'state: {"hotel":{"g0":"x","g1":"x"}}' in model.prompts[2]
    assert stats.gold_state_fallbacks == 0


def test_training_targets_are_updates(tiny_dst_config):
    model = SpeechDST.build(tiny_dst_config().model_copy(update={"carry_state": True}), feature_dim=8)
    e = _dialogue(3)[2]
    assert model.dst_target(e.transcript, e.state, e.prev_state) == target_json("user 2", {"hotel": {"g2": "x"}})
    assert model.dst_prompt(e.history, e.prev_state).endswith(
        'state: {"hotel":{"g0":"x","g1":"x"}}\n' + model.cfg.dst_instruction + "\n")
    plain = SpeechDST.build(tiny_dst_config(), feature_dim=8)
    assert plain.dst_target(e.transcript, e.state, e.prev_state) == target_json("user 2", e.state)
    assert "state:" not in plain.dst_prompt(e.history, e.prev_state)


def test_a_failed_previous_turn_falls_back_to_the_gold_state_and_is_counted():
    exs = _dialogue(3)
    ok = TurnPrediction("d", 0, 0, "user 0", {"hotel": {"s0": "0"}})
    stats = TrackStats()
    assert previous_state(exs[1], {0: ok}, "predicted", stats) == {"hotel": {"s0": "0"}}  # its own prediction
    failed = TurnPrediction("d", 2, 1, "user 1", None, error="backend down")
    assert previous_state(exs[2], {0: ok, 2: failed}, "predicted", stats) == exs[2].prev_state  # gold, counted
    assert stats.gold_state_fallbacks == 1
    assert previous_state(exs[2], {}, "gold", stats) == exs[2].prev_state and stats.gold_state_fallbacks == 1
