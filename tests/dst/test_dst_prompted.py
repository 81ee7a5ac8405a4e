"""Prompted DST baselines (dst/prompted.py): prompts, few-shot draws, failures recorded as errors, and real
runs — the embedded SmolLM2 as a cascade behind Whisper tiny.en (`spokentod dst track --tracker prompted
--llm ... --asr whisper-ct2`) and the same model behind our own `serve` over loopback."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from spokentod.backends.base import Backend, GenParams, create
from spokentod.dst.cli import app
from spokentod.dst.data import ontology as O
from spokentod.dst.data.examples import Example, dialogue_examples
from spokentod.dst.infer.predictions import write_predictions
from spokentod.dst.infer.prompted import PromptedTracker, schema_slots, schema_text, select_shots
from spokentod.dst.infer.track import TrackStats
from spokentod.dst.score.scorer import score_files


def ex(did, turn, ordinal, history, text, state, audio=None):
    return Example(did, turn, ordinal, tuple(history), text, state, audio, None, tuple(state))


DIALOGUE = [ex("d1", 0, 0, [], "i need a hotel in the north", {"hotel": {"area": "north"}}),
            ex("d1", 2, 1, [("user", "i need a hotel in the north"), ("agent", "what price range?")],
               "a cheap one please", {"hotel": {"area": "north", "pricerange": "cheap"}})]
POOL = [ex(f"t{i}", 2 * k, k, [("agent", "hello")] * (2 * k), f"text {i} {k}",
           {"restaurant": {"food": f"food{i}"}} if (i + k) % 3 else {}) for i in range(6) for k in range(3)]


class Down(Backend):
    """An LLM whose every call fails, as an unreachable server does."""

    kind, name = "llm", "down"

    def chat(self, messages, params=None):
        raise ConnectionError("connection refused")

    def stream(self, messages, params=None):
        raise ConnectionError("connection refused")


class Recorder:
    """Delegates to a real LLM backend and keeps every message list it was sent."""

    def __init__(self, llm):
        self.llm, self.sent = llm, []

    def chat(self, messages, params=None):
        self.sent.append(messages)
        return self.llm.chat(messages, params)


def test_schema_lists_tracked_slots_and_short_value_lists():
    slots = schema_slots(O.load("multiwoz"))
    assert "address" not in slots["hotel"] and "phone" not in slots["restaurant"]  # DB columns, never state
    text = schema_text(slots)
    assert "- hotel: area (centre | east | north | south | west), day (" in text
    assert "name, parking" in text  # 33 hotel names: name only
    assert "profile" not in slots and "profile" in schema_slots(O.load("spokenwoz"))
    assert schema_text(slots, domains=["taxi"]) == "- taxi: arriveby, departure, destination, leaveat"
    assert schema_slots(None, POOL) == {"restaurant": {"food": []}}  # no ontology: names from examples


def test_few_shot_draw_is_seeded_and_order_independent():
    a, b = select_shots(POOL, 3, seed=1), select_shots(POOL[::-1], 3, seed=1)
    assert a == b and all(e.state for e in a)
    assert select_shots(POOL, 3, seed=2) != a
    with pytest.raises(ValueError, match="only"):
        select_shots(POOL, 100)


def test_messages_hold_schema_shots_and_history():
    shots = select_shots(POOL, 2, seed=0)
    tr = PromptedTracker(Down(), O.load("multiwoz"), shots)
    msgs = tr.messages(DIALOGUE[1], [("user", "i need a hotl"), ("agent", "what price range?")], "a cheap one")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "- restaurant: area (" in msgs[0]["content"] and '"transcript"' in msgs[0]["content"]
    assert json.loads(msgs[2]["content"]) == {"transcript": shots[0].transcript, "state": shots[0].state}
    assert "user: i need a hotl\nagent: what price range?" in msgs[-1]["content"]
    assert "User's latest turn: a cheap one" in msgs[-1]["content"]
    with pytest.raises(ValueError, match="AudioLM"):
        PromptedTracker(Down(), user_input="audio")


def test_failed_backend_call_is_an_error_not_an_empty_state(tmp_path):
    stats = TrackStats()
    preds = PromptedTracker(Down(), O.load("multiwoz")).track([DIALOGUE], progress=False, stats=stats)
    assert [p.state for p in preds] == [None, None] and stats.failed == 2
    assert preds[0].error == "llm: ConnectionError: connection refused"
    assert preds[1].transcript == "a cheap one please"  # text input: the text it was given
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"dialogue_id": e.dialogue_id, "turn": e.turn, "state": e.state}) + "\n"
                            for e in DIALOGUE))
    r = score_files(write_predictions(preds, tmp_path / "p.jsonl"), refs, ontology="none")
    assert r["missing_turns"] == 2 and r["jga"] == 0.0


# ------------------------------------------------------------------ real models (slow)

LLM = {"name": "smollm2", "threads": 1}
MAX_TOKENS = 16
GOLD = ["I need a cheap hotel in the north.", "Two nights from Friday, please."]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """A 2-user-turn dialogue rendered with espeak (a manifest with relative audio paths) + a shots file."""
    from spokentod.audio import write_wav
    from spokentod.data.schema import Audio, Dialogue, Speaker, Turn

    root = tmp_path_factory.mktemp("spoken")
    tts = create("tts", "espeak")
    states = [{"hotel": {"area": "north", "pricerange": "cheap"}},
              {"hotel": {"area": "north", "pricerange": "cheap", "stay": "2", "day": "friday"}}]
    turns = []
    for k, (text, state) in enumerate(zip(GOLD, states)):
        a = tts.synthesize(text)
        write_wav(root / f"u{k}.wav", a.samples, a.rate)
        turns.append(Turn(index=2 * k, speaker=Speaker.user, text=text, state=state,
                          audio=Audio(path=f"u{k}.wav", sample_rate=a.rate, duration=a.duration)))
        turns.append(Turn(index=2 * k + 1, speaker=Speaker.agent, text="How many nights?" if not k else "Done."))
    (root / "test.jsonl").write_text(Dialogue(id="sp1", source="t", turns=turns).model_dump_json() + "\n")
    shot = Dialogue(id="tr1", source="t", turns=[
        Turn(index=0, speaker=Speaker.user, text="a train to ely", state={"train": {"destination": "ely"}})])
    (root / "shots.jsonl").write_text(shot.model_dump_json() + "\n")
    return root


@pytest.fixture(scope="module")
def cascade_run(spoken):
    out = spoken / "run"
    args = ["track", "--tracker", "prompted", "--llm", json.dumps(LLM), "--asr", "whisper-ct2", "--shots", "1",
            "--shots-manifest", str(spoken / "shots.jsonl"), "--manifest", str(spoken / "test.jsonl"),
            "--out", str(out), "--ontology", "none", "--max-new-tokens", str(MAX_TOKENS), "--no-cache",
            "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
def test_cascade_cli_smollm2_after_whisper(cascade_run, spoken):
    preds = [json.loads(x) for x in (cascade_run / "predictions.jsonl").read_text().splitlines()]
    assert [(p["dialogue_id"], p["turn"]) for p in preds] == [("sp1", 0), ("sp1", 2)]
    for p, gold in zip(preds, GOLD):
        assert p["raw"].strip() and isinstance(p["state"], dict)  # an answer, parsed (maybe repaired)
        assert "hotel" in p["transcript"].lower() or "night" in p["transcript"].lower()  # the ASR's words
    info = json.loads((cascade_run / "track.json").read_text())
    assert info["settings"]["tracker"] == "prompted" and info["settings"]["mode"] == "text"
    assert info["tracker"]["prompted"]["shots"] == ["tr1/0"] and info["counts"]["failed"] == 0
    assert info["counts"]["asr_errors"] == 0 and info["timings"]["asr_s"] > 0
    # scored like the model: WER of the cascade's ASR comes out of the transcripts
    refs = spoken / "refs.jsonl"
    refs.write_text("".join(json.dumps({"dialogue_id": "sp1", "turn": 2 * k, "state": {}, "transcript": g}) + "\n"
                            for k, g in enumerate(GOLD)))
    res = CliRunner().invoke(app, ["score", "-p", str(cascade_run / "predictions.jsonl"), "-r", str(refs), "--json"])
    assert res.exit_code == 0, res.output
    assert 0 <= json.loads(res.stdout.strip().splitlines()[-1])["wer"] < 1


@pytest.fixture(scope="module")
def server():
    """Our `serve` on a loopback port with the embedded SmolLM2 and Whisper tiny.en (audio in: a cascade)."""
    from spokentod.serve.app import create_app
    from spokentod.serve.background import BackgroundServer

    with BackgroundServer(create_app({}, backends={"llm": create("llm", LLM), "asr": create("asr", "whisper-ct2")})) as s:
        yield s


def examples(spoken, modality="text"):
    from spokentod.data.manifest import read_manifest

    groups = dialogue_examples(read_manifest(spoken / "test.jsonl"), modality, spoken)
    pool = [e for g in dialogue_examples(read_manifest(spoken / "shots.jsonl"), "text") for e in g]
    return groups, select_shots(pool, 1, 0)


@pytest.mark.slow
def test_served_smollm2_gives_the_same_predictions_with_predicted_history(cascade_run, spoken, server):
    """The same tracker over `serve` on loopback: same prompts, same greedy answers as in-process; the
    second prompt's history holds the first turn's ASR transcript (predicted), not the gold text."""
    preds = [json.loads(x) for x in (cascade_run / "predictions.jsonl").read_text().splitlines()]
    asr_texts = {("sp1", p["turn"]): p["transcript"] for p in preds}
    groups, shots = examples(spoken)
    client = Recorder(create("llm", {"name": "openai", "model": "smollm2", "base_url": server.url,
                                     "max_attempts": 1, "timeout": 600}))
    tr = PromptedTracker(client, None, shots, params=GenParams(max_tokens=MAX_TOKENS, seed=0),
                         schema_from=[e for g in groups for e in g])
    served = tr.track(groups, "predicted", asr_texts, progress=False)
    assert [p.raw for p in served] == [p["raw"] for p in preds]
    last = client.sent[1][-1]["content"]
    assert f"user: {preds[0]['transcript']}\nagent: How many nights?" in last
    if preds[0]["transcript"] != GOLD[0]:
        assert GOLD[0] not in last


class AudioRecorder:
    def __init__(self, lm):
        self.lm, self.sent = lm, []

    def respond(self, messages, params=None):
        self.sent.append(messages)
        return self.lm.respond(messages, params)


@pytest.mark.slow
def test_audio_in_through_an_audiolm_backend(spoken, server):
    """user_input="audio": the user's audio goes to an AudioLM backend (here `serve`'s audio chat, which
    transcribes it for SmolLM2); the transcript is the model's own, and it feeds the next turn's history."""
    groups, shots = examples(spoken, "speech")
    lm = AudioRecorder(create("audiolm", {"name": "openai", "model": "smollm2", "base_url": server.url,
                                          "audio_out": False, "max_attempts": 1, "timeout": 600}))
    tr = PromptedTracker(lm, None, shots, user_input="audio", params=GenParams(max_tokens=MAX_TOKENS, seed=0),
                         schema_from=[e for g in groups for e in g])
    preds = tr.track(groups, "predicted", progress=False)
    assert len(preds) == 2 and all(p.state is not None and p.raw for p in preds)
    parts = lm.sent[0][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "audio"] and parts[1]["audio"] == groups[0][0].audio
    assert "User's latest turn" not in parts[0]["text"]  # no text of the turn: the model must listen
    assert f"user: {preds[0].transcript}\n" in lm.sent[1][-1]["content"][0]["text"]
