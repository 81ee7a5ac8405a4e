"""The audio judge (voice consistency 0-100, JSON) over loopback: AudioJudge → the real OpenAI-compatible
audio client (backends/audiolm/openai_audio.py) → `spokentod serve` → a scripted audio LM behind it.

The scripted model is the only stand-in, and it sits *behind* the real server (registered the way
tests/_serving.py registers EchoAudioLM), so the prompt, the audio clips, the JSON on the wire, the
server's decoding, its error mapping and the client's timeout are all the real code paths.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _serving import ServerThread

from spokentod.audio import write_wav
from spokentod.backends.base import AudioReply, Backend, create
from spokentod.metrics.judge import PROMPTS, AudioJudge, load_judge_prompt
from spokentod.metrics.registry import ScoredReply, available
from spokentod.metrics.score import Resources, compute_one
from spokentod.rundir.records import ResultRecord
from spokentod.serve.app import create_app

MODEL = "scripted-voice"
GOOD = '{"voice_consistency": {"reason": "same timbre and pitch", "score": 88}}'
# (seconds, rate) per clip, oldest first; the last is the reply being judged. Distinct lengths and rates
# show order and resampling; five clips show the judge keeps only the last three earlier ones.
CLIPS = [(0.20, 16000), (0.30, 24000), (0.45, 22050), (0.60, 16000), (0.85, 24000)]
SENT = CLIPS[1:]  # what the judge must send: the last 3 earlier replies, then the current one


class ScriptedVoiceJudge(Backend):
    """Behind the server: records the (server-decoded) messages it gets and answers `text`; `fail` makes it
    raise (→ HTTP 500), `hang` makes it wait (→ the client's timeout) until the test releases it."""

    kind, name = "audiolm", MODEL

    def __init__(self):
        self.text, self.fail, self.seen = GOOD, False, []
        self.hang, self.release = False, threading.Event()

    def respond(self, messages, params=None) -> AudioReply:
        self.seen.append((messages, params))
        if self.fail:
            raise RuntimeError("voice model crashed")
        if self.hang:
            self.release.wait(10)
        return AudioReply(self.text)


class RequestLog:
    """ASGI wrapper in front of the app: keeps the JSON body of every chat request exactly as received."""

    def __init__(self, app):
        self.app, self.bodies = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        chunks = []

        async def logged():
            msg = await receive()
            if msg["type"] == "http.request":
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body"):
                    self.bodies.append(json.loads(b"".join(chunks)))
            return msg

        await self.app(scope, logged, send)


@pytest.fixture(scope="module")
def server():
    model = ScriptedVoiceJudge()
    log = RequestLog(create_app({}, backends={"audiolm": model}))
    with ServerThread(log) as s:
        s.model, s.log = model, log
        try:
            yield s
        finally:
            model.release.set()  # never leave a request hanging at shutdown


@pytest.fixture
def model(server):
    m = server.model
    m.text, m.fail, m.hang, m.seen[:] = GOOD, False, False, []
    m.release.clear()
    server.log.bodies.clear()
    return m


@pytest.fixture(scope="module")
def reply(tmp_path_factory):
    d = tmp_path_factory.mktemp("voice")
    paths = []
    for i, (sec, rate) in enumerate(CLIPS):
        t = np.arange(int(sec * rate)) / rate
        paths.append(d / f"agent_{i}.wav")
        write_wav(paths[-1], (0.3 * np.sin(2 * np.pi * (180 + 20 * i) * t)).astype(np.float32), rate)
    rec = ResultRecord(system="e2e", dialogue_id="d1", turn=9, text="sure", audio_path=str(paths[-1])).to_json()
    return ScoredReply(rec, d, spoken=True, prior_audio=paths[:-1])


def judge_for(url: str, **kw) -> AudioJudge:
    backend = create("audiolm", {"name": "openai", "model": MODEL, "base_url": url, "audio_out": False,
                                 "max_attempts": 1, **kw})
    return AudioJudge(backend)


def score(reply: ScoredReply, judge: AudioJudge):
    """The real scoring path (what `spokentod bench score` runs per reply), without the metric cache."""
    return compute_one(available()["voice_judge"], reply, Resources(audio_judge=judge), None, Counter())


def test_judge_sends_the_clips_and_the_versioned_prompt_and_reads_the_score(server, model, reply):
    judge = judge_for(server.url)
    out = score(reply, judge)
    assert out.values == {"voice_judge": 88.0} and out.missing == {}
    assert out.judge["voice"]["raw"]["voice_consistency"] == {"reason": "same timbre and pitch", "score": 88}

    # the versioned prompt: the bundled file, its sha256 recorded in the result
    prompt_file = PROMPTS / "judge_voice_v1.txt"
    sha = hashlib.sha256(prompt_file.read_bytes()).hexdigest()
    assert judge.prompt_hash() == load_judge_prompt("judge_voice_v1").sha256 == sha
    assert out.judge["voice"]["prompt"] == "judge_voice_v1" and out.judge["voice"]["prompt_sha256"] == sha

    # the HTTP request as the server received it: one user message, the prompt, then 4 audio parts
    (body,) = server.log.bodies
    assert body["model"] == MODEL and body["modalities"] == ["text"] and "audio" not in body
    assert body["temperature"] == 0.0 and body["max_tokens"] == judge.max_tokens
    (msg,) = body["messages"]
    assert msg["role"] == "user"
    text, *audio = msg["content"]
    assert text == {"type": "text", "text": load_judge_prompt("judge_voice_v1").render(n_clips=4)}
    assert "4 audio clips" in text["text"] and "The last clip is the agent's current reply" in text["text"]
    assert [p["type"] for p in audio] == ["input_audio"] * 4
    files = [Path(p) for p in reply.prior_audio[-3:]] + [reply.audio_path]
    for part, path, (sec, rate) in zip(audio, files, SENT, strict=True):
        assert part["input_audio"]["format"] == "wav"
        data = base64.b64decode(part["input_audio"]["data"], validate=True)
        assert data == path.read_bytes()  # the file itself, in order: earlier replies, then the current one
        samples, got_rate = sf.read(io.BytesIO(data), dtype="float32")
        info = sf.info(str(path))
        assert (len(samples), got_rate) == (info.frames, info.samplerate) == (int(sec * rate), rate)

    # what the model behind the server got: the server's decoding, resampled to 16 kHz, same durations
    (messages, params), = model.seen
    parts = messages[0]["content"]
    assert parts[0] == {"type": "text", "text": text["text"]}
    assert [p["type"] for p in parts[1:]] == ["audio"] * 4
    for p, (sec, _) in zip(parts[1:], SENT, strict=True):
        assert p["rate"] == 16000 and abs(len(p["samples"]) - sec * 16000) <= 2
    assert params.temperature == 0.0 and params.max_tokens == judge.max_tokens


def test_two_clips_when_only_one_earlier_reply(server, model, reply):
    one = ScoredReply(reply.record, reply.run_dir, spoken=True, prior_audio=reply.prior_audio[-1:])
    assert score(one, judge_for(server.url)).values == {"voice_judge": 88.0}
    (body,) = server.log.bodies
    _, *audio = body["messages"][0]["content"]
    assert len(audio) == 2 and "2 audio clips" in body["messages"][0]["content"][0]["text"]
    assert [len(p["samples"]) for p in model.seen[0][0][0]["content"][1:]] == [9600, 13600]


@pytest.mark.parametrize("answer, reason", [
    ("It sounds like the same person to me.", "no JSON object in judge reply (prose)"),
    ('{"voice_consistency": {"reason": "same timbre", "sco', "truncated JSON with no complete field"),
    ('{"voice_consistency": {"reason": "louder", "score": 150}}', "voice_consistency score 150 is outside 0-100"),
    ('{"voice_consistency": {"reason": "odd", "score": -5}}', "voice_consistency score -5 is outside 0-100"),
    ('{"voice_consistency": {"reason": "no idea"}}', "'voice_consistency' has no score"),
    ('{"naturalness": {"reason": "fine", "score": 70}}', "judge reply has no 'voice_consistency'"),
    ("", "empty judge reply"),
], ids=["prose", "truncated", "over-100", "negative", "no-score", "wrong-key", "empty"])
def test_unusable_answers_are_missing_with_the_reason_never_zero(server, model, reply, answer, reason):
    model.text = answer
    out = score(reply, judge_for(server.url))
    assert out.values == {"voice_judge": None}  # missing, not 0
    assert reason in out.missing["voice_judge"], out.missing
    assert out.judge["voice"]["text"] == answer and out.judge["voice"]["prompt"] == "judge_voice_v1"
    assert len(server.log.bodies) == 1 and len(model.seen) == 1  # the call itself went through


def test_server_error_is_missing_with_the_reason(server, model, reply):
    model.fail = True
    out = score(reply, judge_for(server.url))
    assert out.values == {"voice_judge": None} and not out.cacheable  # transient: retried on the next score
    why = out.missing["voice_judge"]
    assert why.startswith("audio judge call failed:") and "HTTP 500" in why and "voice model crashed" in why
    assert len(model.seen) == 1


def test_server_timeout_is_missing_with_the_reason(server, model, reply):
    model.hang = True
    try:
        out = score(reply, judge_for(server.url, timeout=0.5))
    finally:
        model.release.set()
    assert out.values == {"voice_judge": None} and not out.cacheable
    why = out.missing["voice_judge"]
    assert why.startswith("audio judge call failed:") and "timeout after 0.5 s" in why, why


def test_nothing_to_compare_is_missing_without_a_request(server, model, reply):
    alone = ScoredReply(reply.record, reply.run_dir, spoken=True)
    out = score(alone, judge_for(server.url))
    assert out.values == {"voice_judge": None}
    assert out.missing["voice_judge"] == "no earlier spoken reply in this dialogue to compare with"
    silent = ScoredReply({**reply.record, "audio_path": None}, reply.run_dir, spoken=True, prior_audio=reply.prior_audio)
    assert score(silent, judge_for(server.url)).missing["voice_judge"] == "no reply audio"
    assert server.log.bodies == [] and model.seen == []


def test_an_openai_audio_judge_asks_for_text_only_unless_told():
    from spokentod.metrics.score import _text_out

    assert _text_out('{"name": "openai", "model": "m"}')["audio_out"] is False
    assert _text_out({"name": "openai", "audio_out": True})["audio_out"] is True
    assert "audio_out" not in _text_out({"name": "qwen-omni"})
