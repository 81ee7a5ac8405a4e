"""SalesBot 1.0 original format: speakers from the intent position's parity, phases, errors."""

from __future__ import annotations

import json

import pytest

from spokentod.data.corpora import salesbot1
from spokentod.data.schema import Phase, Speaker
from spokentod.errors import DataError, Problem


@pytest.fixture(scope="module")
def examples(data_dir):
    return salesbot1.load(data_dir / "salesbot/salesbot1")


def test_counts_and_consistency(examples):
    assert len(examples) == 10
    assert sum(len(d.turns) for d in examples) == 93 + 64
    assert all(d.metadata["transition_consistent"] for d in examples)
    assert {d.metadata["subset"] for d in examples} == {"Merge_SGD", "TOD_Simulators"}


def test_speakers_and_phases(examples):
    d = next(d for d in examples if d.id == "simulateTOD_0001")  # position 7: the agent opens
    assert d.turns[0].speaker == Speaker.agent and d.turns[7].speaker == Speaker.user
    assert d.transition_index == 7
    assert [t.phase for t in d.turns[7:9]] == [Phase.transition, Phase.transition]
    assert d.turns[8].text == "Is there anything else I can do for you?"  # transition_candidates[0]
    assert d.turns[9].phase == Phase.task and d.turns[9].text == "Yes, I'd like to find an Adventure movie."
    assert d.intent.type == "FindMovies"
    m = next(d for d in examples if d.id == "merge_0000")
    assert m.turns[0].speaker == Speaker.user and m.transition_index == 4


# ---- bad input -------------------------------------------------------------------------------------


def _rec(rid, **kw):
    r = {
        "id": rid,
        "dialog": ["a", "b", "c", "d"],
        "intent": {"type": ["FindMovies"], "position": 1},
        "transition_candidates": ["c", "x", "y", "z"],
        "filename": "Merge_SGD",
    }
    r.update(kw)
    return r


def write(tmp_path, obj):
    p = tmp_path / "sb1.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_errors_name_record_and_field(tmp_path):
    cases = [
        (_rec("a", intent={"type": ["FindMovies"], "position": 3}), "intent.position"),
        (_rec("b", intent={"type": [], "position": 1}), "intent.type"),
        (_rec("c", dialog=[]), "dialog"),
        (_rec("d", dialog=["a", 5, "c"]), "dialog.1"),
    ]
    for rec, field in cases:
        with pytest.raises(DataError) as e:
            salesbot1.load(write(tmp_path, [rec]))
        assert (e.value.problems[0].record, e.value.problems[0].field) == (rec["id"], field)


def test_lenient(tmp_path):
    problems: list[Problem] = []
    out = salesbot1.load(
        write(tmp_path, [_rec("ok"), _rec("bad", dialog=[])]), lenient=True, problems=problems
    )
    assert [d.id for d in out] == ["ok"] and out[0].metadata["transition_consistent"]
    assert [t.speaker for t in out[0].turns] == [Speaker.agent, Speaker.user, Speaker.agent, Speaker.user]
    assert [(p.record, p.field) for p in problems] == [("bad", "dialog")]
