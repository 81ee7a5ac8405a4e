"""corpus_stats / render_stats, stratified_sample, and the `data stats|sample|convert` CLI."""

from __future__ import annotations

import json
import statistics
from collections import Counter

import pytest
from rich.console import Console
from typer.testing import CliRunner

from spokentod.cli import app
from spokentod.data import corpora
from spokentod.data.manifest import read_manifest
from spokentod.data.sample import allocate, stratified_sample
from spokentod.data.schema import Audio, Dialogue, Intent, Phase, Speaker, Turn
from spokentod.data.stats import corpus_stats, render_stats

C, T, K = Phase.chitchat, Phase.transition, Phase.task


def dlg(id: str, phases: list[Phase | None], intent: str | None = None, source: str = "x",
        state_at: int | None = None, audio_s: float | None = None) -> Dialogue:
    """A dialogue with one turn per phase entry; turn text has i+1 words; user first."""
    turns = [Turn(index=i, speaker=Speaker.agent if i % 2 else Speaker.user, text=" ".join("w" * (i + 1)),
                  phase=p, state={"Dom": {"s": "v"}} if i == state_at else None,
                  audio=Audio(path=f"{id}_{i}.wav", sample_rate=16000, duration=audio_s) if audio_s else None)
             for i, p in enumerate(phases)]
    return Dialogue(id=id, source=source, intent=Intent(type=intent) if intent else None, turns=turns)


@pytest.fixture(scope="module")
def demo():
    return corpora.load("demo")


# --- stats -------------------------------------------------------------------------------------

def test_stats_hand_built():
    ds = [dlg("a", [C, C, C, C, T, K], "FindMovie", state_at=4, audio_s=1800.0),  # transition 4, 4 chit-chat
          dlg("b", [C, C, T, K], "FindMovie"),                                    # transition 2
          dlg("c", [C, C, C, C], "GetRide", source="y")]                          # no transition
    s = corpus_stats(ds)
    assert s["dialogues"] == 3 and s["turns_total"] == 14
    assert s["turns"] == {"mean": pytest.approx(14 / 3), "sd": pytest.approx(statistics.pstdev([6, 4, 4])),
                          "min": 4, "max": 6}
    assert s["user_turns"]["mean"] == pytest.approx(7 / 3)
    words = [i + 1 for n in (6, 4, 4) for i in range(n)]
    assert s["words_per_turn"] == pytest.approx(statistics.fmean(words))
    assert s["intents"] == {"FindMovie": 2, "GetRide": 1} and s["sources"] == {"x": 2, "y": 1}
    assert s["multiphase"] and s["with_transition"] == 2
    assert s["transition_position_mean"] == 3 and s["transition_position_sd"] == 1
    assert s["chitchat_length_mean"] == 3 and s["chitchat_length_sd"] == 1
    assert s["phase_turns"] == {"chitchat": 10, "transition": 2, "task": 2}
    assert s["with_state"] == 1 and s["with_audio"] == 1
    assert s["audio_hours"] == pytest.approx(6 * 1800 / 3600)
    assert s["by_intent"]["FindMovie"] == {"dialogues": 2, "turns_mean": 5, "transition_position_mean": 3,
                                           "chitchat_length_mean": 3}
    assert s["by_intent"]["GetRide"]["transition_position_mean"] is None
    json.dumps(s)  # the CLI prints it as JSON


def test_stats_chitchat_length_counts_only_chitchat_turns():
    # SalesBot 2.0 puts non-chit-chat turns (the agent's pivot) before the transition
    s = corpus_stats([dlg("a", [C, C, C, C, None, None, T, K])])
    assert s["transition_position_mean"] == 6 and s["chitchat_length_mean"] == 4


def test_stats_single_phase_and_empty():
    s = corpus_stats([dlg("a", [None, None]), dlg("b", [None] * 4)])
    assert not s["multiphase"] and "transition_position_mean" not in s and "audio_hours" not in s
    assert s["intents"] == {"none": 2} and s["by_intent"]["none"] == {"dialogues": 2, "turns_mean": 3}
    e = corpus_stats([])
    assert e["dialogues"] == 0 and e["turns"] is None and e["by_intent"] == {}


def test_stats_demo(demo):
    s = corpus_stats(demo)
    positions = [d.transition_index for d in demo]
    assert s["dialogues"] == len(demo) >= 20 and s["with_transition"] == len(demo)
    assert s["transition_position_mean"] == pytest.approx(statistics.fmean(positions))
    # the demo has no turns between chit-chat and transition
    assert s["chitchat_length_mean"] == s["transition_position_mean"]
    assert s["with_state"] == len(demo) and s["with_audio"] == 0
    assert sum(r["dialogues"] for r in s["by_intent"].values()) == len(demo)
    assert s["phase_turns"]["transition"] == len(demo)


def test_render_stats(demo):
    con = Console(record=True, width=140)
    con.print(render_stats(corpus_stats(demo)))
    text = con.export_text()
    assert "transition position" in text and "FindRestaurants" in text and "chitchat" in text
    con.print(render_stats(corpus_stats([dlg("a", [None, None])])))  # single-phase renders too


def test_stats_salesbot2_msgd(data_dir):
    """Table 3 check on the real MSGD file through the salesbot2 loader (written separately)."""
    path = data_dir / "salesbot" / "salesbot2" / "MSGD_dataset.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    s = corpus_stats(corpora.load("salesbot2", path))
    assert s["dialogues"] == 100
    # the loader drops empty utterances (merge_0018, merge_0030) and records them; each one before the
    # transition moves it one turn earlier than the file's raw position
    raw_pos = {r["id"]: r["transition_sentence"]["position"] for r in raw}
    loaded = corpora.load("salesbot2", path)
    expected = [raw_pos[d.id] - sum(1 for i in d.metadata.get("empty_turns_dropped", []) if i < raw_pos[d.id])
                for d in loaded]
    assert s["transition_position_mean"] == pytest.approx(statistics.fmean(expected))
    assert statistics.fmean(raw_pos.values()) == pytest.approx(7.68)


# --- sampling ----------------------------------------------------------------------------------

def test_allocate_exact_and_proportional():
    for sizes, n in [({"a": 25, "b": 23, "c": 16, "d": 13, "e": 10, "f": 4, "g": 3, "h": 2}, 50),
                     (dict(zip("abcdefghi", [137, 128, 124, 106, 44, 37, 35, 6, 3])), 500),
                     ({"a": 1, "b": 1, "c": 1}, 2), ({"a": 7}, 3)]:
        alloc = allocate(sizes, n)
        total = sum(sizes.values())
        assert sum(alloc.values()) == n
        assert all(abs(alloc[k] - n * s / total) < 1 and alloc[k] <= s for k, s in sizes.items())
        assert alloc == allocate(dict(reversed(sizes.items())), n)  # independent of dict order


def corpus_of(counts: dict[str | None, int]) -> list[Dialogue]:
    return [dlg(f"{k}_{i}", [None], k) for k, n in counts.items() for i in range(n)]


def test_sample_paper_size_with_none_stratum():
    # SalesBot-2.0-like skew, plus dialogues with no intent as their own stratum
    counts = {"FindAttraction": 137, "FindRestaurants": 128, "GetTransportation": 124, "FindMovie": 106,
              "LookupMusic": 44, "FindEvents": 37, "SearchHotel": 35, "SearchRoundtripFlights": 6,
              "SearchOnewayFlight": 3, None: 20}
    ds = corpus_of(counts)
    picked = stratified_sample(ds, 500, "intent", seed=0)
    assert len(picked) == 500 and len({d.id for d in picked}) == 500
    got = Counter(d.intent.type if d.intent else "none" for d in picked)
    for k, size in counts.items():
        assert abs(got[k or "none"] - 500 * size / len(ds)) < 1
    assert [d.id for d in picked] == [d.id for d in ds if d in picked]  # input order kept


def test_sample_demo_deterministic_and_seeded(demo):
    a = stratified_sample(demo, 10, "intent", seed=0)
    assert len(a) == 10
    sizes = Counter(d.intent.type for d in demo)
    got = Counter(d.intent.type for d in a)
    assert all(abs(got[k] - 10 * s / len(demo)) < 1 for k, s in sizes.items())
    assert [d.id for d in a] == [d.id for d in stratified_sample(demo, 10, "intent", seed=0)]
    assert [d.id for d in a] != [d.id for d in stratified_sample(demo, 10, "intent", seed=1)]


def test_sample_edges(demo):
    assert [d.id for d in stratified_sample(demo, len(demo) + 5, "intent", 0)] == [d.id for d in demo]
    assert stratified_sample(demo, 0, "intent", 0) == []
    assert len(stratified_sample(demo, 7, None, 3)) == 7
    mixed = corpus_of({"A": 6}) + [dlg(f"s{i}", [None], "A", source="other") for i in range(2)]
    assert Counter(d.source for d in stratified_sample(mixed, 4, "source", 1)) == {"x": 3, "other": 1}
    with pytest.raises(ValueError):
        stratified_sample(demo, -1, "intent", 0)
    with pytest.raises(ValueError):
        stratified_sample(demo, 5, "speaker", 0)


# --- CLI ---------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_stats_json_without_path():
    r = runner.invoke(app, ["data", "stats", "--corpus", "demo", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    for key in ("dialogues", "turns", "user_turns", "words_per_turn", "intents", "sources", "phase_turns",
                "transition_position_mean", "chitchat_length_mean", "by_intent", "with_state", "with_audio"):
        assert key in s
    assert s["dialogues"] >= 20


def test_cli_stats_table_and_missing_corpus():
    r = runner.invoke(app, ["data", "stats", "--corpus", "demo"])
    assert r.exit_code == 0 and "By intent" in r.stdout
    r = runner.invoke(app, ["data", "stats"])  # neither corpus nor path: a clear error, not a traceback
    assert r.exit_code == 1 and "no corpus and no path" in r.stderr


def test_cli_sample_and_convert(tmp_path, demo):
    out = tmp_path / "sample.jsonl"
    r = runner.invoke(app, ["data", "sample", "-c", "demo", "--n", "9", "--seed", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert [d.id for d in read_manifest(out)] == [d.id for d in stratified_sample(demo, 9, "intent", 2)]
    conv = tmp_path / "demo.jsonl"
    r = runner.invoke(app, ["data", "convert", "--corpus", "demo", "--out", str(conv)])
    assert r.exit_code == 0, r.output
    assert list(read_manifest(conv)) == demo
    # a converted manifest loads back through the same loader from a path
    r = runner.invoke(app, ["data", "stats", "-c", "demo", "-p", str(conv), "--json"])
    assert json.loads(r.stdout)["dialogues"] == len(demo)
