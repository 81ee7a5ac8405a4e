"""The embedded end-to-end system in a bench run: the shipped speech adapter → SmolLM2 hears each rendered
user turn of a demo dialogue; without a talker it is scored on its text, with one (espeak) on its audio."""

from __future__ import annotations

import json

import pytest

from spokentod.bench.run import run_bench
from spokentod.metrics.score import score_run


@pytest.mark.slow  # the real adapter, LLM, Whisper encoder, ASR and embeddings
def test_an_e2e_bench_run_on_one_demo_dialogue(tmp_path):
    params = {"max_tokens": 24, "temperature": 0.0}
    cfg = {"dataset": {"corpus": "demo", "limit": 1}, "out": str(tmp_path / "run"), "cache": {"enabled": False},
           "audio": {"tts": {"name": "espeak"}},
           "systems": {"e2e": {"type": "e2e", "audiolm": {"name": "speechlm"}, "prompt": "sales_agent_v1",
                               "params": params},
                       "e2e-talker": {"type": "e2e", "prompt": "sales_agent_v1", "params": params,
                                      "audiolm": {"name": "speechlm", "tts": {"name": "espeak"}}}}}
    summary = run_bench(cfg, progress=False)
    assert summary.total("ok") == summary.total("planned") > 0
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["speaks"] == {"e2e": False, "e2e-talker": True}
    results = {s: [json.loads(x) for x in (run / "results" / f"{s}.jsonl").read_text().splitlines()]
               for s in ("e2e", "e2e-talker")}
    for plain, talker in zip(results["e2e"], results["e2e-talker"]):
        assert plain["text"] and plain["text"] == talker["text"]  # greedy: the talker only adds a voice
        assert plain["audio_path"] is None and (run / talker["audio_path"]).is_file()
    score_run(run, metrics="judge_free,intelligibility")
    scored = {s: [json.loads(x) for x in (run / "metrics" / f"{s}.jsonl").read_text().splitlines()]
              for s in ("e2e", "e2e-talker")}
    assert all(r["metrics"]["genericness"] is not None and r["metrics"]["wer"] is None for r in scored["e2e"])
    assert all(r["metrics"]["wer"] is not None for r in scored["e2e-talker"])
