"""Multi-turn DST inference (dst/infer/track.py) and `spokentod dst track` on a tiny random Llama SpeechDST.

Features come from a small in-memory source (fixed random tensors per audio path): it stands in for the
frozen-encoder FeatureCache, which infer.track only needs `.get(paths)` from. A random model emits no
JSON, so every transcript would parse as "" and a history mix-up between dialogues would be invisible;
`Echo` therefore wraps the model's real greedy output as the transcript of a JSON answer (generation is
unchanged) so that each dialogue's predicted history is distinct, and records every history it is given.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

from spokentod.dst.cli import app
from spokentod.dst.data.examples import Example
from spokentod.dst.infer.predictions import write_multiwoz_eval, write_predictions
from spokentod.dst.infer.track import TrackStats, TurnPrediction, interleave, predicted_history, track
from spokentod.dst.model.speechdst import SpeechDST
from spokentod.dst.score.scorer import score_files
from spokentod.dst.score.states import read_states

FEAT = 16


CONNECTOR_DROPOUT = 0.1  # not 0: the tracker must switch the model to eval()


class Echo(SpeechDST):
    """Records the histories it is prompted with and whether prefixes ran in eval mode; answers with the
    real generated text as the JSON transcript."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.histories: list[tuple] = []
        self.prefix_training: list[bool] = []

    def dst_prompt(self, history, prev_state=None):
        self.histories.append(tuple(history))
        return super().dst_prompt(history, prev_state)

    def prefix(self, *a, **kw):
        self.prefix_training.append(self.training)
        return super().prefix(*a, **kw)

    def generate(self, *a, **kw):
        return [json.dumps({"transcript": f"heard {t.strip()[:24]}", "state": {"hotel": {"area": "north"}}})
                for t in super().generate(*a, **kw)]


@pytest.fixture(scope="module")
def model(tiny_dst_config):
    torch.manual_seed(0)
    return Echo.build(tiny_dst_config(connector_dropout=CONNECTOR_DROPOUT), feature_dim=FEAT)


class PathFeatures:
    """Fixed random [T, FEAT] features per audio path (T from 20 to 79 frames)."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def get(self, paths):
        self.calls.append(list(paths))
        out = []
        for p in paths:
            g = torch.Generator().manual_seed(zlib.crc32(p.encode()))
            out.append(torch.randn(20 + zlib.crc32(p.encode()) % 60, FEAT, generator=g))
        return out


def dialogue(did: str, n_user: int) -> list[Example]:
    """n_user user turns, each after an agent turn; gold texts name their dialogue."""
    exs, history = [], []
    for k in range(n_user):
        if k:
            history.append(("agent", f"agent line {k} of {did}"))
        turn = len(history)
        text = f"user says {k} in {did}"
        exs.append(Example(did, turn, k, tuple(history), text, {"hotel": {"area": "north"}} if k else {},
                           f"/audio/{did}/{k}.wav", 1.0, ("hotel",)))
        history.append(("user", text))
    return exs


DIALOGUES = [dialogue("d1", 3), dialogue("d2", 1), dialogue("d3", 4), dialogue("d4", 2), dialogue("d5", 3)]


def key(preds):
    return [(p.dialogue_id, p.turn, p.ordinal, p.raw, p.transcript, p.state, p.repaired, p.error) for p in preds]


def test_interleave_refills_slots_in_turn_order():
    steps = list(interleave([[0] * 3, [0], [0] * 4, [0] * 2], 2))
    assert steps[0] == [(0, 0), (1, 0)]
    assert steps[1] == [(0, 1), (2, 0)]  # d2 ended after one turn: its slot took d3 at once
    seen = [x for s in steps for x in s]
    assert sorted(seen) == sorted((d, k) for d, n in enumerate([3, 1, 4, 2]) for k in range(n))
    assert all(len({d for d, _ in s}) == len(s) <= 2 for s in steps)  # one turn per dialogue per step
    for d in range(4):
        assert [k for s in steps for dd, k in s if dd == d] == sorted(k for s in steps for dd, k in s if dd == d)


def test_batch_invariance_and_no_history_mixing(model):
    """Dialogues of different lengths: batch size 3 (with refill) and 8 give what batch size 1 gives."""
    feats = PathFeatures()
    model.train()  # track must switch dropout off itself
    model.histories.clear()
    model.prefix_training.clear()
    stats = TrackStats()
    b3 = track(model, DIALOGUES, "speech", feats, batch_size=3, max_new_tokens=10, progress=False, stats=stats)
    assert not any(model.prefix_training) and model.training  # eval while tracking, mode restored after
    rec3, calls3 = list(model.histories), list(feats.calls)
    b1 = track(model, DIALOGUES, "speech", feats, batch_size=1, max_new_tokens=10, progress=False)
    b8 = track(model, DIALOGUES, "speech", feats, batch_size=8, max_new_tokens=10, progress=False)
    assert key(b3) == key(b1) == key(b8)
    assert [(p.dialogue_id, p.turn) for p in b3] == [(e.dialogue_id, e.turn) for d in DIALOGUES for e in d]
    assert len({p.transcript for p in b3}) > 5  # distinct predicted transcripts: mixing would show
    assert max(len(c) for c in calls3) == 3 and stats.batches < sum(map(len, DIALOGUES))
    assert stats.turns == 13 and stats.dialogues == 5 and stats.failed == 0
    # every history the model saw is its own dialogue's: gold agent lines + that dialogue's predictions
    by_dialogue = {}
    for p in b3:
        by_dialogue.setdefault(p.dialogue_id, {})[p.turn] = p
    expected = [predicted_history(ex, {t: p for t, p in by_dialogue[ex.dialogue_id].items() if t < ex.turn})
                for d in DIALOGUES for ex in d]
    assert Counter(rec3) == Counter(expected)


def test_predicted_and_gold_history_differ_in_the_prompt(model):
    feats = PathFeatures()
    model.histories.clear()
    track(model, DIALOGUES, "speech", feats, history="gold", batch_size=2, max_new_tokens=6, progress=False)
    gold = list(model.histories)
    assert Counter(gold) == Counter(ex.history for d in DIALOGUES for ex in d)
    model.histories.clear()
    preds = track(model, DIALOGUES, "speech", feats, history="predicted", batch_size=2, max_new_tokens=6,
                  progress=False)
    pred_users = {t for h in model.histories for s, t in h if s == "user"}
    gold_users = {t for h in gold for s, t in h if s == "user"}
    assert pred_users and not pred_users & gold_users  # no gold user text reaches a predicted history
    assert pred_users <= {p.transcript for p in preds}
    agents = lambda hs: Counter(tuple(x for x in h if x[0] == "agent") for h in hs)
    assert agents(model.histories) == agents(gold)  # agent turns stay gold


def test_text_modes_use_given_user_texts(model):
    model.histories.clear()
    texts = {(ex.dialogue_id, ex.turn): f"asr {ex.dialogue_id} {ex.turn}" for d in DIALOGUES for ex in d}
    a = track(model, DIALOGUES[:2], "text_direct", user_texts=texts, batch_size=2, max_new_tokens=6,
              progress=False)
    beams = track(model, DIALOGUES[:2], "text_encoder", batch_size=2, max_new_tokens=6, num_beams=2,
                  progress=False)
    assert len(beams) == 4 and all(p.raw for p in beams)
    b = track(model, DIALOGUES[:2], "text_direct", batch_size=2, max_new_tokens=6, progress=False)
    assert [p.raw for p in a] != [p.raw for p in b]  # the ASR text, not the gold one, went in
    with pytest.raises(ValueError, match="needs features"):
        track(model, DIALOGUES, "speech", None, progress=False)
    with pytest.raises(ValueError, match="turn order"):
        track(model, [DIALOGUES[0][::-1]], "text_direct", progress=False)


def test_predicted_history_falls_back_to_gold_for_untracked_turns():
    ex = DIALOGUES[2][3]  # history: u0 a1 u1 a2 u2 a3
    preds = {0: TurnPrediction("d3", 0, 0, "P0", {}), 4: TurnPrediction("d3", 4, 2, "P2", {})}
    stats = TrackStats()
    h = predicted_history(ex, preds, stats)
    assert [t for s, t in h if s == "user"] == ["P0", "user says 1 in d3", "P2"]
    assert stats.gold_history_fallbacks == 1


# ------------------------------------------------------------------ writers → score


def refs_and_preds():
    exs = [ex for d in DIALOGUES[:3] for ex in d]
    preds = [TurnPrediction(ex.dialogue_id, ex.turn, ex.ordinal, ex.transcript, ex.state, raw="x") for ex in exs]
    preds[1] = TurnPrediction("d1", preds[1].turn, 1, "", None, error="llm: RuntimeError: down")  # failed call
    preds[2].state = {"hotel": {"area": "south"}}
    preds[2].repaired = True
    return exs, preds


def test_writers_round_trip_through_score(tmp_path):
    exs, preds = refs_and_preds()
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"dialogue_id": e.dialogue_id, "turn": e.turn, "state": e.state,
                                        "transcript": e.transcript}) + "\n" for e in exs))
    jl = write_predictions(preds, tmp_path / "p.jsonl")
    recs = [json.loads(x) for x in jl.read_text().splitlines()]
    assert recs[0] == {"dialogue_id": "d1", "turn": 0, "transcript": "user says 0 in d1", "state": {}, "raw": "x"}
    assert recs[1]["state"] is None and recs[1]["error"].startswith("llm:") and recs[2]["repaired"] is True
    r = score_files(jl, refs, ontology="none")
    assert r["turns"] == 8 and r["missing_turns"] == 1  # the failed call: missing, not an empty state
    assert r["jga"] == pytest.approx(6 / 8)

    mw = write_multiwoz_eval(preds, tmp_path / "mwz.json")
    data = json.loads(mw.read_text())
    assert list(data) == ["d1", "d2", "d3"] and len(data["d3"]) == 4
    assert data["d1"][1]["state"] is None and data["d3"][1]["active_domains"] == ["hotel"]
    states, indexing, problems = read_states(mw)
    assert indexing == "ordinal" and len(states) == 7 and len(problems) == 1
    mwz_refs = tmp_path / "refs_mwz.json"
    mwz_refs.write_text(json.dumps({d[0].dialogue_id: [{"state": e.state} for e in d] for d in DIALOGUES[:3]}))
    r2 = score_files(mw, mwz_refs, ontology="none", turn_index="ordinal")
    assert (r2["jga"], r2["missing_turns"]) == (r["jga"], 1)

    for pred_file, extra in ((jl, []), (mw, ["--turn-index", "ordinal"])):  # and through the CLI
        ref_file = refs if pred_file == jl else mwz_refs
        res = CliRunner().invoke(app, ["score", "-p", str(pred_file), "-r", str(ref_file), "--ontology", "none",
                                       "--json", *extra])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout.strip().splitlines()[-1])["jga"] == pytest.approx(6 / 8)


def test_multiwoz_eval_keeps_positions_across_gaps(tmp_path):
    preds = [TurnPrediction("MUL0001.json", 0, 0, "a", {}), TurnPrediction("MUL0001.json", 4, 2, "c",
                                                                         {"taxi": {"leaveat": "10:00"}})]
    data = json.loads(write_multiwoz_eval(preds, tmp_path / "m.json").read_text())
    assert [e["state"] for e in data["mul0001"]] == [{}, None, {"taxi": {"leaveat": "10:00"}}]


# ------------------------------------------------------------------ the CLI


def manifest(tmp_path):
    from spokentod.data.schema import Dialogue, Speaker, Turn

    lines = []
    for did, n in (("m1", 2), ("m2", 3)):
        turns = []
        for k in range(n):
            turns.append(Turn(index=len(turns), speaker=Speaker.user, text=f"user {k} {did}",
                              state={"hotel": {"area": "north"}}))
            turns.append(Turn(index=len(turns), speaker=Speaker.agent, text=f"agent {k}"))
        lines.append(Dialogue(id=did, source="test", turns=turns).model_dump_json(exclude_none=True))
    p = tmp_path / "dialogues.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.fixture(scope="module")
def checkpoint(tiny_dst_config, tmp_path_factory):
    torch.manual_seed(0)
    m = SpeechDST.build(tiny_dst_config(connector_dropout=CONNECTOR_DROPOUT), feature_dim=FEAT)
    out = tmp_path_factory.mktemp("ckpt")
    m.save_pretrained(out)
    return out


def test_track_cli_text_mode_writes_what_score_reads(tmp_path, checkpoint):
    m, out = manifest(tmp_path), tmp_path / "run"
    args = ["track", "--checkpoint", str(checkpoint), "--manifest", str(m), "--out", str(out), "--mode",
            "text_direct", "--batch-size", "2", "--max-new-tokens", "6", "--no-progress", "--no-cache"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    info = json.loads((out / "track.json").read_text())
    assert info["counts"]["turns"] == 5 and info["counts"]["dialogues"] == 2
    assert info["settings"]["mode"] == "text_direct" and info["settings"]["history"] == "predicted"
    assert info["timings"]["turns_per_s"] > 0 and info["counts"]["dropped"]["dropped"] == 0
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(r["dialogue_id"], r["turn"]) for r in recs] == [("m1", 0), ("m1", 2), ("m2", 0), ("m2", 2), ("m2", 4)]
    assert all("raw" in r for r in recs)
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"dialogue_id": r["dialogue_id"], "turn": r["turn"],
                                        "state": {"hotel": {"area": "north"}}}) + "\n" for r in recs))
    res = CliRunner().invoke(app, ["score", "-p", str(out / "predictions.jsonl"), "-r", str(refs), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["turns"] == 5


def test_track_cli_errors_name_the_problem(tmp_path, checkpoint):
    m = manifest(tmp_path)

    def run(*a):
        res = CliRunner().invoke(app, ["track", "--out", str(tmp_path / "o"), "--no-progress", *a])
        res.err = " ".join(res.stderr.split())  # rich wraps long messages
        return res

    res = run("--manifest", str(m))
    assert res.exit_code == 1 and "--checkpoint" in res.err
    res = run("--checkpoint", str(checkpoint))
    assert res.exit_code == 1 and "--manifest" in res.err
    res = run("--checkpoint", str(tmp_path), "--manifest", str(m), "--mode", "text_direct")
    assert res.exit_code == 1 and "not a SpeechDST checkpoint" in res.err
    res = run("--tracker", "prompted", "--manifest", str(m))
    assert res.exit_code == 1 and "--llm" in res.err
    res = run("--tracker", "bogus", "--history", "mine", "--manifest", str(m))  # options checked by TrackSettings
    assert res.exit_code == 1 and "--tracker: Input should be 'model', 'prompted' or 'embedded'; --history:" in res.err
    res = run("--checkpoint", str(checkpoint), "--manifest", str(m), "--mode", "speech")
    assert res.exit_code == 1 and "no user turns" in res.err and "no_audio" in res.err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(m.read_text().replace('"speaker":"agent"', '"speaker":"robot"', 1))
    res = run("--checkpoint", str(checkpoint), "--manifest", str(bad), "--mode", "text_direct")
    assert res.exit_code == 1 and "bad.jsonl" in res.err and "speaker" in res.err
    twice = tmp_path / "twice.jsonl"
    twice.write_text(m.read_text() * 2)  # the same dialogue ids twice: predictions could not be told apart
    res = run("--checkpoint", str(checkpoint), "--manifest", str(twice), "--mode", "text_direct")
    assert res.exit_code == 1 and "twice.jsonl" in res.err and "not unique" in res.err and "m1" in res.err
    # backend specs are read by the one parser (backends/spec.py): a missing spec file is named, not a name
    res = run("--tracker", "prompted", "--manifest", str(m), "--llm", str(tmp_path / "nope.yaml"))
    assert res.exit_code == 1 and "nope.yaml does not exist" in res.err


@pytest.mark.slow
def test_track_cli_speech_mode_through_the_feature_cache(tmp_path, tiny_dst_config):
    """The real speech path: espeak-rendered user turns → embedded Whisper tiny.en encoder (CTranslate2) →
    on-disk feature cache → SpeechDST; a second run reads every feature from the cache, same predictions."""
    from spokentod.audio import write_wav
    from spokentod.backends.base import create
    from spokentod.data.schema import Audio, Dialogue, Speaker, Turn
    from spokentod.dst.model.config import EncoderConfig
    from spokentod.dst.model.encoders import build_encoder

    dim = build_encoder(EncoderConfig()).dim
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    SpeechDST.build(tiny_dst_config(connector_dropout=CONNECTOR_DROPOUT), feature_dim=dim).save_pretrained(ckpt)
    tts = create("tts", "espeak")
    turns = []
    for k, text in enumerate(["a cheap hotel please", "in the north"]):
        a = tts.synthesize(text)
        write_wav(tmp_path / f"u{k}.wav", a.samples, a.rate)
        turns += [Turn(index=2 * k, speaker=Speaker.user, text=text, state={"hotel": {"area": "north"}},
                       audio=Audio(path=f"u{k}.wav", sample_rate=a.rate, duration=a.duration)),
                  Turn(index=2 * k + 1, speaker=Speaker.agent, text="ok")]
    m = tmp_path / "m.jsonl"
    m.write_text(Dialogue(id="s1", source="t", turns=turns).model_dump_json() + "\n")
    outs = []
    for run in ("a", "b"):
        res = CliRunner().invoke(app, ["track", "--checkpoint", str(ckpt), "--manifest", str(m), "--out",
                                       str(tmp_path / run), "--feature-cache", str(tmp_path / "fc"),
                                       "--max-new-tokens", "6", "--no-progress"])
        assert res.exit_code == 0, res.output
        outs.append(json.loads((tmp_path / run / "track.json").read_text()))
    assert outs[0]["tracker"]["feature_cache"] == {"hits": 0, "misses": 2}
    assert outs[1]["tracker"]["feature_cache"] == {"hits": 2, "misses": 0}
    assert outs[0]["tracker"]["encoder"]["kind"] == "whisper-ct2" and outs[0]["settings"]["mode"] == "speech"
    assert (tmp_path / "a" / "predictions.jsonl").read_text() == (tmp_path / "b" / "predictions.jsonl").read_text()


def test_ship_tracker_measures_the_shipped_float16_weights_and_track_embedded_runs_them(tmp_path, checkpoint,
                                                                                        monkeypatch):
    from safetensors.torch import load_file

    from spokentod.dst.infer import embedded

    m, shipped = manifest(tmp_path), tmp_path / "embedded"
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"dialogue_id": d, "turn": t, "state": {"hotel": {"area": "north"}}}) + "\n"
                            for d, t in (("m1", 0), ("m1", 2), ("m2", 0), ("m2", 2), ("m2", 4))))
    res = CliRunner().invoke(app, ["ship-tracker", str(checkpoint), "--test-manifest", str(m), "--references",
                                   str(refs), "--mode", "text_direct", "--out", str(shipped), "--batch-size", "2",
                                   "--max-new-tokens", "6", "--no-progress"])
    assert res.exit_code == 0, res.output
    weights = load_file(str(shipped / "trainable.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float16} and any("lora_" in k for k in weights)
    # a text_direct tracker reads neither the text encoder nor the connector: they are left out, by name
    assert not any(k.startswith(("text_encoder.", "connector.", "ctc_")) for k in weights)
    assert json.loads((shipped / "model.json").read_text())["omitted"] == ["text_encoder.", "connector.", "ctc_"]
    meta = embedded.sidecar(shipped)
    assert meta["mode"] == "text_direct" and meta["asr"] is None and "ship-tracker" in meta["command"]
    assert meta["measured"]["turns"] == 5 and meta["measured"]["empty_state_floor"] == 0.0
    assert meta["weights"]["bytes"] == (shipped / "trainable.safetensors").stat().st_size
    assert not (tmp_path / "embedded.staging").exists()

    # --tracker embedded runs the shipped weights the way the sidecar says, and scores what the sidecar says
    monkeypatch.setattr(embedded, "EMBEDDED", shipped)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["track", "--tracker", "embedded", "--manifest", str(m), "--out", str(out),
                                   "--batch-size", "2", "--max-new-tokens", "6", "--no-progress", "--no-cache"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "track.json").read_text())
    assert info["settings"]["tracker"] == "embedded" and info["settings"]["mode"] == "text_direct"
    assert info["tracker"]["embedded"]["measured"]["jga"] == meta["measured"]["jga"]
    assert score_files(out / "predictions.jsonl", refs)["slot_f1"] == meta["measured"]["slot_f1"]
    res = CliRunner().invoke(app, ["track", "--tracker", "embedded", "--mode", "text_encoder", "--manifest", str(m),
                                   "--out", str(out), "--no-progress"])
    assert res.exit_code == 1 and "--mode text_encoder cannot run it" in " ".join(res.stderr.split())
    res = CliRunner().invoke(app, ["track", "--tracker", "embedded", "--checkpoint", str(checkpoint), "--manifest",
                                   str(m), "--out", str(out), "--no-progress"])
    assert res.exit_code == 1 and "drop --checkpoint" in " ".join(res.stderr.split())
    monkeypatch.setattr(embedded, "EMBEDDED", tmp_path / "nothing")
    res = CliRunner().invoke(app, ["track", "--tracker", "embedded", "--manifest", str(m), "--out", str(out)])
    assert res.exit_code == 1 and "no embedded tracker" in " ".join(res.stderr.split())
