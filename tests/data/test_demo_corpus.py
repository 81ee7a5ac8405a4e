"""The embedded demo corpus: structure, phases, SGD-valid states, speakable text, and its loader."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from spokentod.data import corpora
from spokentod.data.corpora import demo
from spokentod.data.schema import Phase, Speaker
from spokentod.errors import DataError, Problem


@pytest.fixture(scope="module")
def dialogues():
    return corpora.load("demo")


@pytest.fixture(scope="module")
def sgd_services(data_dir: Path) -> dict[str, dict]:
    """Every SGD service by name (a name means the same schema in every split)."""
    out: dict[str, dict] = {}
    for split in ("train", "dev", "test"):
        for s in json.loads((data_dir / "sgd" / split / "schema.json").read_text()):
            out.setdefault(s["service_name"], s)
    return out


def test_loader_entry_points_agree(dialogues):
    assert corpora.info("demo").bundled and corpora.info("demo").multiphase
    assert [d.id for d in corpora.load("demo", "demo")] == [d.id for d in dialogues]
    assert [d.id for d in demo.load()] == [d.id for d in dialogues]
    assert demo.DEMO_FILE.is_file() and (demo.DEMO_FILE.parent / "README.md").is_file()


def test_size_ids_and_intents(dialogues):
    assert len(dialogues) >= 20
    ids = [d.id for d in dialogues]
    assert len(set(ids)) == len(ids)
    assert ids == [f"demo_{i:03d}" for i in range(len(ids))]
    assert {d.source for d in dialogues} == {"demo"}
    assert all(d.intent is not None and d.intent.description for d in dialogues)
    assert len({d.intent.type for d in dialogues}) >= 6


def test_phase_structure(dialogues):
    for d in dialogues:
        assert all(t.phase is not None for t in d.turns), d.id
        # alternating speakers, user first
        assert [t.speaker for t in d.turns] == [Speaker.user if i % 2 == 0 else Speaker.agent
                                               for i in range(len(d.turns))], d.id
        phases = [t.phase for t in d.turns]
        trans = [i for i, p in enumerate(phases) if p == Phase.transition]
        assert len(trans) == 1, d.id
        t = trans[0]
        assert d.turns[t].speaker == Speaker.user, d.id
        assert phases[:t] == [Phase.chitchat] * t, d.id
        assert phases[t + 1:] == [Phase.task] * (len(phases) - t - 1), d.id
        assert 3 <= t <= 6, f"{d.id}: {t} chit-chat turns"
        assert 4 <= len(phases) - t - 1 <= 8, f"{d.id}: {len(phases) - t - 1} task turns"
        assert d.metadata["transition"] in ("implicit", "explicit")


def test_states_are_real_sgd_slots(dialogues, sgd_services):
    for d in dialogues:
        service = d.metadata["service"]
        schema = sgd_services[service]
        # the intent names an intent of that service (SalesBot drops SGD's plural: FindMovie/FindMovies)
        assert any(i["name"].startswith(d.intent.type) for i in schema["intents"]), (d.id, service)
        slots = {s["name"]: s for s in schema["slots"]}
        seen_text, prev = "", {}
        for t in d.turns:
            seen_text += " " + t.text.lower()
            stateful = t.speaker == Speaker.user and t.phase in (Phase.transition, Phase.task)
            assert (t.state is not None) == stateful, (d.id, t.index)
            if not stateful:
                continue
            assert list(t.state) == [service], (d.id, t.index)
            cur = t.state[service]
            assert prev.items() <= cur.items(), f"{d.id} turn {t.index}: state is not cumulative"
            for slot, value in cur.items():
                assert slot in slots, f"{d.id}: {slot!r} is not a slot of {service}"
                if value == "dontcare":
                    continue
                if slots[slot]["is_categorical"]:
                    assert value in slots[slot]["possible_values"], (d.id, slot, value)
                else:  # SGD-style: a non-categorical value is words said so far in the dialogue
                    assert value.lower() in seen_text, (d.id, slot, value)
            prev = cur
        assert prev, f"{d.id}: the task phase fills no slot"


SPEAKABLE = re.compile(r"[A-Za-z][A-Za-z ,.'?!-]*[.?!]")


def test_text_is_speakable(dialogues):
    for d in dialogues:
        for t in d.turns:
            # letters and plain punctuation only: no digits (numbers and times are spelled out),
            # no markdown, no emojis, ends like a sentence
            assert SPEAKABLE.fullmatch(t.text), (d.id, t.index, t.text)
            assert "  " not in t.text and not re.search(r"\d", t.text)


def test_other_manifest_path_strict_and_lenient(tmp_path, dialogues):
    bad = tmp_path / "bad.jsonl"
    good = dialogues[0].model_dump_json(exclude_none=True)
    bad.write_text(good + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        corpora.load("demo", bad)
    problems: list[Problem] = []
    assert [d.id for d in corpora.load("demo", bad, lenient=True, problems=problems)] == [dialogues[0].id]
    assert len(problems) == 1 and problems[0].record == "line 2"


def test_path_none_needs_a_bundled_corpus():
    with pytest.raises(DataError):
        corpora.load(None, None)
    corpora.corpus("_needs_path")(lambda path, lenient=False, problems=None: [])
    try:
        with pytest.raises(DataError, match="path is required"):
            corpora.load("_needs_path", None)
    finally:
        corpora._CORPORA.pop("_needs_path")
