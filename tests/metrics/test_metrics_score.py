"""score_run on a small run directory built here: results records in the store's format written by hand,
with real Kokoro reply audio; checks the metrics files (the report's contract), caching per metric,
and that a failed judge is missing (never 0) and excluded from means with n reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_metrics_audio import speak
from test_metrics_judge import _dead_port

from spokentod.backends.base import Backend, Completion
from spokentod.bench.config import parse_config
from spokentod.data import corpora
from spokentod.metrics import audio as A
from spokentod.metrics.score import score_run
from spokentod.rundir.records import ResultRecord

pytestmark = pytest.mark.slow

BASE = "dnsmos,intelligibility,duration,judge_free,latency"
FIELDS = {"system", "dialogue_id", "turn", "phase", "turn_ordinal", "metrics", "missing", "judge", "transcript", "text"}


def _record(system: str, d, turn: int, text: str, audio: str | None = None, error: str | None = None) -> dict:
    """A results record as the bench runner writes it."""
    t = d.turns[turn]
    return ResultRecord(
        system=system, dialogue_id=d.id, turn=turn, seed=0, attempt=1, phase=t.phase.value, intent=d.intent.type,
        history="gold", context_turns=turn, context_chars=0, user_text=t.text, user_audio=None,
        text="" if error else text, user_transcript=t.text, audio_path=audio, audio_seconds=3.0 if audio else None,
        error=error, error_reason="llm: timeout" if error else None,
        timings={} if error else ({"asr": 0.4, "ttft": 0.9, "llm": 1.1, "tts": 1.5, "first_audio": 2.0, "total": 2.7}
                                  if audio else {"llm": 1.0, "ttft": 0.3, "total": 1.0}),
        runner={"wait_s": 0.0, "respond_s": 2.7}, truncated=False, extra={}, shard=[1, 1],
        started="2026-01-01T00:00:00+00:00", finished="2026-01-01T00:00:03+00:00").to_json()


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    d = corpora.load("demo", None)[0]  # demo_000: user turns 0, 2, 4, 6, ...
    cfg = parse_config({"dataset": {"corpus": "demo", "limit": 1},
                        "systems": {"cascade": {"type": "cascade", "asr": "whisper-ct2", "llm": "smollm2",
                                                "tts": "kokoro"},
                                    "text": {"type": "text", "llm": "smollm2"}}})
    (tmp_path / "run.json").write_text(json.dumps({"config": cfg.model_dump(mode="json"), "status": "finished",
                                                   "protocol_hash": cfg.protocol_hash()}))
    cascade = []
    for turn, text in ((0, d.turns[1].text), (2, d.turns[3].text), (6, "Sure. Which city should I look in?")):
        rel = f"audio_out/cascade/{d.id}/{turn:03d}.wav"
        speak(text, "jf_alpha", tmp_path / rel)
        cascade.append(_record("cascade", d, turn, text, rel))
    cascade.insert(2, _record("cascade", d, 4, "", error="llm: timeout after 60 s"))
    text_recs = [_record("text", d, 0, "That sounds really exhausting! Do you get some days off now?"),
                 _record("text", d, 2, "")]  # an empty reply
    (tmp_path / "results").mkdir()
    for name, recs in (("cascade", cascade), ("text", text_recs)):
        (tmp_path / "results" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return tmp_path


def _read(run: Path, system: str) -> dict[int, dict]:
    lines = (run / "metrics" / f"{system}.jsonl").read_text().splitlines()
    return {r["turn"]: r for r in map(json.loads, lines)}


def test_score_run_writes_metric_files_and_recomputes_only_an_added_metric(run_dir, monkeypatch):
    calls = {"dnsmos": 0}
    real = A.dnsmos

    def counting(x):
        calls["dnsmos"] += 1
        return real(x)

    monkeypatch.setattr(A, "dnsmos", counting)
    first = score_run(run_dir, metrics=BASE)
    casc, text = _read(run_dir, "cascade"), _read(run_dir, "text")
    assert set(casc) == {0, 2, 4, 6} and set(text) == {0, 2}
    for r in [*casc.values(), *text.values()]:
        assert FIELDS <= set(r), set(r)
    assert [casc[t]["turn_ordinal"] for t in (0, 2, 4, 6)] == [1, 2, 3, 4]
    ok = casc[0]
    assert 2.5 < ok["metrics"]["dnsmos_ovrl"] <= 5 and ok["metrics"]["wer"] <= 0.2
    assert ok["transcript"] and ok["text"] == _read(run_dir, "cascade")[0]["text"]
    assert ok["metrics"]["sim_gold"] > 0.95  # the reply IS the gold agent reply
    assert ok["metrics"]["lat_total"] == 2.7 and ok["metrics"]["rtf_tts"] == 0.5
    assert ok["missing"]["repetition_emb"] == "no earlier agent turn in the history"
    assert casc[6]["metrics"]["repetition_ngram"] > 0.5  # it repeats the agent's earlier question
    failed = casc[4]
    assert all(v is None for v in failed["metrics"].values())
    assert failed["missing"]["dnsmos_ovrl"] == "reply failed: llm: timeout"
    assert text[0]["missing"]["dnsmos_ovrl"] == "not applicable: text-only system (no audio)"
    assert text[0]["transcript"] == text[0]["text"] and text[0]["metrics"]["sim_gold"] > 0.8
    assert text[2]["missing"]["sim_gold"] == "empty reply (nothing was said)"
    summary = json.loads((run_dir / "metrics" / "summary.json").read_text())
    d = summary["systems"]["cascade"]["metrics"]["dnsmos_ovrl"]
    assert d["n"] == 3 and d["missing"] == 1 and d["missing_reasons"] == {"reply failed: llm: timeout": 1}
    assert summary["asr"]["name"] == "whisper-ct2" and summary["judge"] is None
    assert calls["dnsmos"] == 3 and first["stats"]["dnsmos"]["computed"] == 3

    second = score_run(run_dir, metrics=BASE + ",voice_sim")
    assert calls["dnsmos"] == 3  # nothing recomputed...
    st = second["stats"]
    assert st["voice_sim"]["computed"] == 3 and st["voice_sim"]["cached"] == 0  # ...but the new metric
    assert all(st[g]["computed"] == 0 and st[g]["cached"] > 0 for g in BASE.split(","))
    casc = _read(run_dir, "cascade")
    assert casc[0]["missing"]["voice_sim"] == "no earlier spoken reply in this dialogue to compare with"
    assert casc[2]["metrics"]["voice_sim"] > 0.8 and casc[6]["metrics"]["voice_sim"] > 0.8  # one voice
    assert second["voice_model"]

    score_run(run_dir, metrics="latency")  # other groups are carried over from the previous file
    assert _read(run_dir, "cascade")[2]["metrics"]["dnsmos_ovrl"] == casc[2]["metrics"]["dnsmos_ovrl"]


class PromptLLM(Backend):
    """A judge stand-in answering well-formed JSON by prompt type (plumbing test); counts calls."""

    kind, name = "llm", "prompt-llm"

    def __init__(self):
        self.calls = 0

    def identity(self):
        return {"kind": "llm", "name": self.name}

    def chat(self, messages, params=None):
        self.calls += 1
        if "Failure types" in messages[-1]["content"]:
            fails = {f: {"reason": "r", "present": f == "repetition", "severity": 50 if f == "repetition" else 0}
                     for f in ("generic", "topic_drift", "repetition", "misunderstanding", "memory")}
            return Completion(json.dumps({**fails, "primary_failure": "repetition"}))
        return Completion('{"naturalness": {"reason": "fluent", "score": 80}, '
                          '"consistency": {"reason": "fits", "score": 70}}')

    def stream(self, messages, params=None):
        yield self.chat(messages, params).text


def test_judge_metrics_are_written_cached_and_failures_are_missing_not_zero(run_dir):
    llm = PromptLLM()
    out = score_run(run_dir, metrics="judge_quality,judge_failures", judge=llm)
    casc = _read(run_dir, "cascade")
    r = casc[2]
    assert r["metrics"]["naturalness"] == 80 and r["metrics"]["consistency"] == 70
    assert r["judge"]["naturalness"] == {"reason": "fluent", "score": 80}
    assert r["metrics"]["fail_repetition_severity"] == 50 and r["metrics"]["fail_repetition_present"] == 1
    assert r["judge"]["failures"]["repetition"]["present"] is True and r["judge"]["primary_failure"] == "repetition"
    assert r["judge"]["weak"] is False
    n_calls = llm.calls
    assert n_calls == 2 * 4  # 3 ok cascade replies + 1 non-empty text reply, two prompts each
    assert out["judge"]["prompts"]["quality"]["sha256"]
    score_run(run_dir, metrics="judge_quality,judge_failures", judge=llm)
    assert llm.calls == n_calls  # all from the metric cache

    dead = {"name": "openai", "model": "judge", "base_url": f"http://127.0.0.1:{_dead_port()}/v1",
            "max_attempts": 1, "timeout": 5}
    out = score_run(run_dir, metrics="judge_quality", judge=dead)
    nat = out["systems"]["cascade"]["metrics"]["naturalness"]
    assert nat["n"] == 0 and nat["mean"] is None and nat["missing"] == 4
    r = _read(run_dir, "cascade")[2]
    assert r["metrics"]["naturalness"] is None and "judge call failed" in r["missing"]["naturalness"]
    again = score_run(run_dir, metrics="judge_quality", judge=dead)
    assert again["stats"]["judge_quality"]["computed"] == 4  # a failed call is not cached: tried again


def test_score_command_prints_a_table(run_dir):
    from typer.testing import CliRunner

    from spokentod.bench.cli import app

    res = CliRunner().invoke(app, ["score", str(run_dir), "--metrics", "latency,duration"])
    assert res.exit_code == 0, res.output
    assert "cascade" in res.output and (run_dir / "metrics" / "summary.json").is_file()
    bad = CliRunner().invoke(app, ["score", str(run_dir), "--metrics", "nope"])
    assert bad.exit_code == 1 and "unknown metric" in bad.output


def test_judge_free_cache_identity_follows_the_generic_reply_set(monkeypatch):
    from spokentod.metrics import judge_free
    from spokentod.metrics.registry import available

    group = available()["judge_free"]
    before = group.identity()
    assert before["embedder"] == judge_free.EMBEDDER
    monkeypatch.setattr(judge_free, "GENERIC_V1", (*judge_free.GENERIC_V1, "anything else?"))
    assert group.identity() != before  # cached genericness values from the old set are not reused
