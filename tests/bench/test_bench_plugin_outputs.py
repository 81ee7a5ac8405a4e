"""Plug-in systems declare what they output (`speaks`): a text-only plug-in is scored on its text like the
built-in text system (audio metrics not applicable), a speaking one on the standardized transcript of its
audio; a plug-in that declares nothing is refused at load with the fix in the message."""

from __future__ import annotations

import json

import pytest

from spokentod.audio import write_wav
from spokentod.backends.base import create
from spokentod.bench.run import run_bench
from spokentod.errors import BenchError
from spokentod.metrics.score import score_run
from spokentod.systems.base import SystemReply


def _reply(user_turn) -> str:
    return f"I see, {' '.join(user_turn.text.split()[:6])}. How can I help you with that today?"


class Writer:
    """Text only: answers in text and never writes audio."""

    speaks = False

    def __init__(self, name, cfg, audio_root=None):
        self.name = name

    def identity(self):
        return {"type": "writer"}

    def respond(self, context, user_turn, audio_out=None):
        return SystemReply(text=_reply(user_turn), timings={"total": 0.01})


class Speaker:
    """Speaks its reply with espeak-ng into audio_out."""

    speaks = True

    def __init__(self, name, cfg, audio_root=None):
        self.name, self.tts = name, create("tts", {"name": "espeak"})

    def identity(self):
        return {"type": "speaker"}

    def respond(self, context, user_turn, audio_out=None):
        text = _reply(user_turn)
        audio = self.tts.synthesize(text)
        write_wav(audio_out, audio.samples, audio.rate)
        return SystemReply(text=text, audio_path=str(audio_out), audio_seconds=audio.duration,
                           timings={"total": 0.01})


class Silent:
    """Declares nothing: refused."""

    def __init__(self, name, cfg, audio_root=None):
        self.name = name


class Vague(Silent):
    speaks = "sometimes"


def _cfg(tmp_path, **systems) -> dict:
    return {"dataset": {"corpus": "demo", "limit": 1}, "out": str(tmp_path / "run"), "cache": {"enabled": False},
            "systems": {name: {"type": f"{__name__}:{cls}"} for name, cls in systems.items()}}


@pytest.mark.slow  # real ASR, DNSMOS and sentence embeddings on the replies
def test_text_only_and_speaking_plugins_are_scored_on_what_they_output(tmp_path):
    summary = run_bench(_cfg(tmp_path, writer="Writer", speaker="Speaker"), progress=False)
    assert summary.total("ok") == summary.total("planned") > 0
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["speaks"] == {"writer": False, "speaker": True}
    results = {s: [json.loads(x) for x in (run / "results" / f"{s}.jsonl").read_text().splitlines()]
               for s in ("writer", "speaker")}
    assert all(r["audio_path"] is None for r in results["writer"])
    assert all(r["audio_path"] and (run / r["audio_path"]).is_file() for r in results["speaker"])
    assert not (run / "audio_out" / "writer").exists()  # a text-only system is never handed an audio path

    score_run(run, metrics="judge_free,intelligibility,dnsmos")
    scored = {s: [json.loads(x) for x in (run / "metrics" / f"{s}.jsonl").read_text().splitlines()]
              for s in ("writer", "speaker")}
    # what the dialogue itself leaves out (the first reply has no earlier agent turn, the last no gold reply)
    expected = ("no earlier agent turn in the history", "no gold agent reply after this user turn")
    for r in scored["writer"]:  # scored on its text, as the built-in text system is
        assert r["transcript"] == r["text"] and "transcript" not in r["missing"]
        assert r["metrics"]["genericness"] is not None and r["metrics"]["context_sim"] is not None
        assert r["metrics"]["reply_words"] == len(r["text"].split())
        for audio_metric in ("dnsmos_ovrl", "wer"):
            assert r["metrics"][audio_metric] is None
            assert r["missing"][audio_metric] == "not applicable: text-only system (no audio)"
        assert all(why in expected or why.startswith("not applicable") for why in r["missing"].values())
    for r in scored["speaker"]:  # heard through the standardized ASR
        assert r["metrics"]["dnsmos_ovrl"] is not None and r["metrics"]["wer"] is not None
        assert "how can i help" in r["transcript"].lower() and r["metrics"]["genericness"] is not None
        assert all(why in expected for why in r["missing"].values())
    assert sum(r["metrics"]["sim_gold"] is not None for r in scored["writer"]) == len(scored["writer"]) - 1


@pytest.mark.parametrize("cls, says", [("Silent", "does not declare it"), ("Vague", "'sometimes', not a bool")])
def test_a_plugin_that_does_not_declare_speaks_is_refused_with_the_fix(tmp_path, cls, says):
    with pytest.raises(BenchError) as e:
        run_bench(_cfg(tmp_path, odd=cls), progress=False)
    msg = str(e.value)
    assert "'odd'" in msg and f"{__name__}:{cls}" in msg and says in msg
    assert "speaks = True" in msg and "speaks = False" in msg
