"""Gold-context protocol: what a system is given at user turn t, checked with a system that records it.

The recording system is a real implementation of the System protocol (a plug-in type "module:Class",
which the runner supports for any outside system); it is the harness that is under test here.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from spokentod.bench.run import run_bench
from spokentod.data import corpora
from spokentod.data.schema import Speaker
from spokentod.systems.base import SystemReply

SEEN: dict[str, list[dict]] = {}
_LOCK = threading.Lock()


class RecordingSystem:
    """Answers "<system> reply to <dialogue>#<t>" and keeps what it was given."""

    speaks = False

    def __init__(self, name: str, cfg: dict, audio_root: Path | None = None):
        self.name, self.cfg, self.audio_root = name, cfg, audio_root

    def identity(self) -> dict:
        return {"type": "recording", "params": self.cfg.get("params", {})}

    def respond(self, context, user_turn, audio_out=None) -> SystemReply:
        with _LOCK:
            SEEN.setdefault(self.name, []).append({
                "dialogue": context.dialogue_id, "t": user_turn.index, "user_text": user_turn.text,
                "turns": [(t.index, t.speaker.value, t.text) for t in context.turns],
                "audio": [t.audio.path if t.audio else None for t in context.turns],
                "user_audio": user_turn.audio.path if user_turn.audio else None, "audio_root": self.audio_root,
                "intent": context.intent.type if context.intent else None})
        if self.cfg.get("fail_on") == user_turn.index:
            return SystemReply(error="llm: BackendError: llm backend 'x': server said: boom (HTTP 500)")
        return SystemReply(text=f"{self.name} reply to {context.dialogue_id}#{user_turn.index}",
                           timings={"total": 0.0})


PLUGIN = f"{__name__}:RecordingSystem"


@pytest.fixture(autouse=True)
def _clear():
    SEEN.clear()


def _config(tmp_path: Path, **systems) -> dict:
    return {"dataset": {"corpus": "demo", "limit": 4}, "out": str(tmp_path / "run"), "cache": {"enabled": False},
            "concurrency": {"workers": 4},
            "systems": systems or {"rec": {"type": PLUGIN}}}


def _gold(d, t):
    return [(x.index, x.speaker.value, x.text) for x in d.turns[:t]]


def test_gold_context_holds_exactly_the_turns_before_t(tmp_path):
    summary = run_bench(_config(tmp_path, a={"type": PLUGIN}, b={"type": PLUGIN}), progress=False)
    dialogues = {d.id: d for d in corpora.load("demo", None)[:4]}
    expected = {(d.id, t.index) for d in dialogues.values() for t in d.user_turns}
    for name in ("a", "b"):  # every system gets the same contexts
        seen = SEEN[name]
        assert {(s["dialogue"], s["t"]) for s in seen} == expected
        assert len(seen) == len(expected)  # each turn once
        for s in seen:
            d = dialogues[s["dialogue"]]
            assert s["turns"] == _gold(d, s["t"])  # exactly the gold turns before t, in order, nothing else
            assert s["user_text"] == d.turns[s["t"]].text
            assert s["intent"] == d.intent.type
    assert summary.total("ok") == 2 * len(expected)
    # and the reply was stored, never fed back: no context holds a system reply
    assert not any("reply to" in text for s in SEEN["a"] for _, _, text in s["turns"])


def test_self_history_feeds_back_own_replies(tmp_path):
    run_bench(_config(tmp_path, me={"type": PLUGIN, "history": "self"}), progress=False)
    dialogues = {d.id: d for d in corpora.load("demo", None)[:4]}
    for s in SEEN["me"]:
        d = dialogues[s["dialogue"]]
        want = []
        for x in d.turns[:s["t"]]:
            if x.speaker == Speaker.user:
                want.append((x.index, "user", x.text))
            else:  # the agent turn after user turn u is replaced by the system's reply to u
                want.append((x.index, "agent", f"me reply to {d.id}#{x.index - 1}"))
        assert s["turns"] == want
    # own-reply mode runs a dialogue's turns in order
    order: dict[str, list[int]] = {}
    for s in SEEN["me"]:
        order.setdefault(s["dialogue"], []).append(s["t"])
    assert all(ts == sorted(ts) for ts in order.values())


def test_a_history_pair_runs_the_same_turns_both_ways(tmp_path):
    run_bench(_config(tmp_path, me={"type": PLUGIN, "history": ["gold", "self"]}), progress=False)
    dialogues = {d.id: d for d in corpora.load("demo", None)[:4]}
    assert {(s["dialogue"], s["t"]) for s in SEEN["me-gold"]} == {(s["dialogue"], s["t"]) for s in SEEN["me-self"]}
    for s in SEEN["me-gold"]:
        assert s["turns"] == _gold(dialogues[s["dialogue"]], s["t"])
    later = [s for s in SEEN["me-self"] if len(s["turns"]) > 1]
    assert later and all(any(f"me-self reply to {s['dialogue']}#" in text for _, _, text in s["turns"])
                         for s in later)
    rec = {n: [json.loads(x) for x in (tmp_path / f"run/results/{n}.jsonl").read_text().splitlines()]
           for n in ("me-gold", "me-self")}
    assert {r["history"] for r in rec["me-gold"]} == {"gold"} and {r["history"] for r in rec["me-self"]} == {"self"}


def test_self_history_falls_back_to_gold_after_a_failed_reply(tmp_path):
    run_bench(_config(tmp_path, me={"type": PLUGIN, "history": "self", "fail_on": 2}), progress=False)
    d = corpora.load("demo", None)[0]
    later = next(s for s in SEEN["me"] if s["dialogue"] == d.id and s["t"] == 4)
    assert later["turns"][3] == (3, "agent", d.turns[3].text)  # turn 2 failed: gold agent turn 3 kept
    assert later["turns"][1] == (1, "agent", f"me reply to {d.id}#0")
    rec = [json.loads(x) for x in (tmp_path / "run/results/me.jsonl").read_text().splitlines()]
    r4 = next(r for r in rec if r["dialogue_id"] == d.id and r["turn"] == 4)
    assert r4["extra"]["self_fallback_turns"] == [3]


def test_records_carry_ids_phase_and_context_size(tmp_path):
    run_bench(_config(tmp_path), progress=False)
    d = corpora.load("demo", None)[0]
    recs = [json.loads(x) for x in (tmp_path / "run/results/rec.jsonl").read_text().splitlines()]
    mine = sorted((r for r in recs if r["dialogue_id"] == d.id), key=lambda r: r["turn"])
    assert [r["turn"] for r in mine] == [t.index for t in d.user_turns]
    for r in mine:
        t = r["turn"]
        assert r["phase"] == d.turns[t].phase.value
        assert r["context_turns"] == t
        assert r["context_chars"] == sum(len(x.text) for x in d.turns[:t])
        assert (r["system"], r["seed"], r["attempt"], r["error"], r["truncated"]) == ("rec", 0, 1, None, False)
        assert r["text"] == f"rec reply to {d.id}#{t}"
    meta = json.loads((tmp_path / "run/run.json").read_text())
    assert meta["status"] == "finished" and meta["systems"]["rec"]["type"] == "recording"
    assert meta["counts"]["rec"]["missing"] == 0


def test_seeds_and_shards_partition_the_work(tmp_path):
    cfg = _config(tmp_path)
    cfg["seeds"] = [0, 1]
    keys = []
    for i in (1, 2, 3):
        s = run_bench(cfg, shard=(i, 3), out=tmp_path / f"s{i}", progress=False)
        assert s.status == "finished"
        path = tmp_path / f"s{i}/results/rec.shard-{i}-of-3.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:  # a shard may get no dialogue
            r = json.loads(line)
            keys.append((r["dialogue_id"], r["turn"], r["seed"]))
    ds = corpora.load("demo", None)[:4]
    assert sorted(keys) == sorted((d.id, t.index, s) for d in ds for t in d.user_turns for s in (0, 1))


def test_history_audio_is_rendered_once_and_the_same_for_every_system(tmp_path):
    """With audio history, every turn (user and agent) is rendered once by the same TTS into
    <out>/audio_in, and every system is given the very same files."""
    cfg = _config(tmp_path, a={"type": PLUGIN, "needs_audio": True}, b={"type": PLUGIN, "needs_audio": True})
    cfg["dataset"]["limit"] = 2
    cfg["audio"] = {"tts": "espeak", "speakers": "all"}
    run_bench(cfg, progress=False)
    root = (tmp_path / "run" / "audio_in").resolve()
    by_system = {name: {(s["dialogue"], s["t"]): s for s in SEEN[name]} for name in ("a", "b")}
    assert by_system["a"].keys() == by_system["b"].keys() and by_system["a"]
    for key, sa in by_system["a"].items():
        sb = by_system["b"][key]
        assert sa["audio"] == sb["audio"] and sa["user_audio"] == sb["user_audio"]
        assert sa["audio_root"] == sb["audio_root"] == root
        assert all(p is not None and (root / p).is_file() for p in sa["audio"] + [sa["user_audio"]])
    assert len(list(root.rglob("*_agent.wav"))) > 0
