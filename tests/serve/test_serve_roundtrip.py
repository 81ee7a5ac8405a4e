"""`spokentod serve` over loopback: the OpenAI-compatible client backends against the real server.

Fast tests use tiny protocol implementations (tests/_serving.py) to check the HTTP plumbing; the slow
ones run the embedded SmolLM2, Whisper tiny.en and Kokoro behind the server.
"""

from __future__ import annotations

import json

import httpx
import jiwer
import numpy as np
import pytest
from _serving import EchoAudioLM, EchoLLM, LengthASR, ServerThread, ToneTTS

from spokentod.audio import wav_bytes
from spokentod.backends.base import GenParams, create
from spokentod.errors import AudioError, BackendError
from spokentod.serve.app import create_app

TOKEN = "test-token-123"
HI = [{"role": "user", "content": "hello there"}]


def tone(seconds: float, rate: int = 16000) -> np.ndarray:
    return (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.fixture(scope="module")
def plumbing(tmp_path_factory):
    backends = {"llm": EchoLLM(), "asr": LengthASR(), "tts": ToneTTS()}
    app = create_app({}, backends=backends, token=TOKEN,
                     limits={"max_body_bytes": 200_000, "max_audio_seconds": 3.0})
    with ServerThread(app) as s:
        s.backends = backends
        yield s


@pytest.fixture
def authed(plumbing, monkeypatch):
    monkeypatch.setenv("SPOKENTOD_TEST_TOKEN", TOKEN)
    return httpx.Client(base_url=plumbing.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def client(kind: str, url: str, model: str, **kw):
    return create(kind, {"name": "openai", "model": model, "base_url": url, "max_attempts": 1,
                         "api_key_env": "SPOKENTOD_TEST_TOKEN", **kw})


# ---------------------------------------------------------------- plumbing (fast)


def test_auth_required(plumbing, authed):
    assert httpx.get(plumbing.url.replace("/v1", "/health")).status_code == 200  # open
    r = httpx.get(f"{plumbing.url}/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{plumbing.url}/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ids = {m["id"]: m["kind"] for m in authed.get("/models").json()["data"]}
    assert ids == {"echo": "llm", "length": "asr", "tone": "tts"}
    with pytest.raises(BackendError) as e:
        create("llm", {"name": "openai", "model": "echo", "base_url": plumbing.url}).chat(HI)
    assert e.value.status == 401 and e.value.attempts == 1  # 4xx: not retried
    assert client("llm", plumbing.url, "echo").chat(HI).text == "echo: hello there"


def test_key_never_in_identity_or_repr(plumbing, authed):
    c = client("llm", plumbing.url, "echo")
    assert TOKEN not in json.dumps(c.identity()) + repr(c) + repr(c.http) + str(vars(c))


def test_request_size_limit(plumbing, authed):
    big = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "x" * 300_000}]}).encode()
    r = authed.post("/chat/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]

    def chunks():  # a valid multipart start, then too much file: no Content-Length, counted as it arrives
        yield (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
               b"Content-Type: audio/wav\r\n\r\n")
        for _ in range(10):
            yield b"x" * 50_000

    files = {"file": ("a.wav", b"x" * 300_000, "audio/wav")}
    assert authed.post("/audio/transcriptions", files=files, data={"model": "length"}).status_code == 413
    r = authed.post("/audio/transcriptions", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    assert authed.get("/models").status_code == 200  # still serving


def test_bad_audio_is_400_naming_the_cause(plumbing, authed):
    def post(data: bytes):
        return authed.post("/audio/transcriptions", files={"file": ("a.wav", data, "audio/wav")},
                           data={"model": "length"})

    r = post(b"RIFF....not really a wav file")
    assert r.status_code == 400 and "unsupported audio" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "file"
    r = post(wav_bytes(np.zeros(0, np.float32), 16000))
    assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
    r = post(wav_bytes(tone(4.0), 16000))  # over this server's 3 s limit
    assert r.status_code == 400 and "over the 3 s limit" in r.json()["error"]["message"]
    body = {"model": "echo", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "!!not base64!!", "format": "wav"}}]}]}
    r = authed.post("/chat/completions", json=body)
    assert r.status_code == 400 and "messages[0].content[0]" in r.json()["error"]["message"]
    assert plumbing.backends["asr"].calls == 0  # refused at the edge, the model never saw it
    with pytest.raises(AudioError, match="empty"):  # the client refuses empty audio before uploading
        client("asr", plumbing.url, "length").transcribe(np.zeros(0, np.float32), rate=16000)


@pytest.mark.parametrize("body, status, needle", [
    ({"model": "echo"}, 400, "field 'messages': Field required"),
    ({"model": "echo", "messages": [{"role": "bot", "content": "x"}]}, 400, "messages.0.role"),
    ({"model": "echo", "messages": HI, "temperature": 5}, 400, "field 'temperature'"),
    ({"model": "echo", "messages": HI, "n": 2}, 400, "only n=1"),
    ({"model": "echo", "messages": HI, "max_tokens": 10**6}, 400, "max_tokens"),
    ({"model": "echo", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "'image_url'"),
    ({"model": "gpt-9", "messages": HI}, 404, "'gpt-9' is not served"),
])
def test_bad_chat_requests_name_the_field(authed, body, status, needle):
    r = authed.post("/chat/completions", json=body)
    assert r.status_code == status and needle in r.json()["error"]["message"], r.text


def test_bad_speech_and_json(authed):
    r = authed.post("/audio/speech", json={"model": "tone", "input": "hi", "response_format": "mp3"})
    assert r.status_code == 400 and "use wav, flac or pcm" in r.json()["error"]["message"]
    r = authed.post("/audio/speech", json={"model": "tone", "input": "   "})
    assert r.status_code == 400 and "'input' is empty" in r.json()["error"]["message"]
    r = authed.post("/chat/completions", content=b'{"model": "echo", ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = authed.post("/audio/transcriptions", data={"model": "length"})
    assert r.status_code == 400 and "field 'file'" in r.json()["error"]["message"]


def test_backend_failure_is_a_json_error_and_the_server_survives(tmp_path):
    app = create_app({}, backends={"llm": EchoLLM(fail_first=2)})
    with ServerThread(app) as s:
        r = httpx.post(f"{s.url}/chat/completions", json={"model": "echo", "messages": HI})
        assert r.status_code == 500 and "RuntimeError: echo failure 1" in r.json()["error"]["message"]
        r = httpx.post(f"{s.url}/chat/completions", json={"model": "echo", "messages": HI, "stream": True})
        assert r.status_code == 500 and "echo failure 2" in r.json()["error"]["message"]  # before any event
        assert create("llm", {"name": "openai", "model": "echo", "base_url": s.url}).chat(HI).text


def test_lazy_loading_error_is_named():
    app = create_app({"llm": {"name": "no-such-backend"}})
    with ServerThread(app) as s:
        r = httpx.post(f"{s.url}/chat/completions", json={"model": "no-such-backend", "messages": HI})
    assert r.status_code == 500 and "cannot load llm backend 'no-such-backend'" in r.json()["error"]["message"]


def test_sse_shape(plumbing, authed):
    body = {"model": "echo", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    with authed.stream("POST", "/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["completion_tokens"] == 3
    out = client("llm", plumbing.url, "echo").stream_chat(HI)
    assert out.text == text and out.tokens == 3 and 0 < out.ttft <= out.timings.wall
    timed = client("llm", plumbing.url, "echo", measure_ttft=True).chat(HI)  # chat() streaming underneath
    assert timed.text == text and timed.ttft is not None


def test_cascade_audio_chat_plumbing(plumbing, authed):
    lm = client("audiolm", plumbing.url, "echo")
    reply = lm.respond([{"role": "user", "content": [{"type": "audio", "samples": tone(0.5, 8000), "rate": 8000}]}])
    assert reply.text == "echo: 8000 samples"  # resampled to 16 kHz at the client edge
    assert reply.audio is not None and reply.audio.rate == 16000 and reply.audio.duration == pytest.approx(0.3)
    speech = client("tts", plumbing.url, "tone").synthesize("one two")
    assert speech.rate == 16000 and speech.duration == pytest.approx(0.2, abs=1e-3) and speech.timings.first > 0


def test_audio_lm_route_and_server_side_cache(tmp_path):
    llm = EchoLLM()
    app = create_app({"cache": {"path": str(tmp_path / "serve-cache.sqlite")}},
                     backends={"llm": llm, "audiolm": EchoAudioLM()})
    with ServerThread(app) as s:
        lm = create("audiolm", {"name": "openai", "model": "echo-omni", "base_url": s.url})
        reply = lm.respond([{"role": "system", "content": "be brief"},
                            {"role": "user", "content": [{"type": "text", "text": "listen:"},
                                                         {"type": "audio", "samples": tone(0.25), "rate": 16000}]}])
        assert reply.text == "heard 4000 samples" and reply.audio.duration == pytest.approx(0.3)
        text_only = create("audiolm", {"name": "openai", "model": "echo-omni", "base_url": s.url, "audio_out": False})
        assert text_only.respond([{"role": "user", "content": "hi"}]).audio is None
        chat = create("llm", {"name": "openai", "model": "echo", "base_url": s.url})
        assert chat.chat(HI).text == chat.chat(HI).text == "".join(chat.stream(HI))
        assert llm.calls == 1 and app.state.cache.stats()["hits"] == 2


# ---------------------------------------------------------------- the embedded models (slow)


@pytest.fixture(scope="module")
def real():
    app = create_app({"asr": {"name": "whisper-ct2"}, "llm": {"name": "smollm2"}, "tts": {"name": "kokoro"}})
    with ServerThread(app) as s:
        yield s


ASK = [{"role": "system", "content": "You are a helpful restaurant booking assistant."},
       {"role": "user", "content": "Can you book a table for two at seven tonight?"}]


@pytest.mark.slow
def test_chat_round_trip_smollm2(real):
    llm = create("llm", {"name": "openai", "model": "smollm2", "base_url": real.url, "timeout": 300})
    p = GenParams(max_tokens=16)
    out = llm.chat(ASK, p)
    direct = real.app.state.slots["llm"].call("chat", ASK, p)  # the same model in-process, same lock
    assert out.text.strip() and out.text == direct.text  # greedy: the wire changes nothing
    assert out.tokens == direct.tokens > 0 and out.timings.extra["attempts"] == 1

    streamed = llm.stream_chat(ASK, p)
    assert streamed.text == out.text
    assert streamed.ttft is not None and 0 < streamed.ttft < streamed.timings.wall
    pieces = list(llm.stream(ASK, p))
    assert len(pieces) > 1 and "".join(pieces) == out.text


@pytest.mark.slow
def test_speech_and_transcription_round_trip(real):
    sentence = "I would like to book a table for two people at seven o'clock tonight."
    tts = create("tts", {"name": "openai", "model": "kokoro", "base_url": real.url, "timeout": 300})
    audio = tts.synthesize(sentence)  # voice "alloy" means the server's default voice
    assert audio.rate == 24000 and audio.duration > 2.0 and audio.timings.first is not None
    asr = create("asr", {"name": "openai", "model": "whisper-ct2", "base_url": real.url, "timeout": 300})
    heard = asr.transcribe(audio)
    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
    wer = jiwer.wer(norm(sentence), norm(heard.text))
    assert wer <= 0.25, (heard.text, wer)
    assert heard.timings.rtf is not None and heard.timings.extra["audio_seconds"] == pytest.approx(audio.duration, 0.01)


@pytest.mark.slow
def test_audio_chat_cascade_round_trip(real):
    tts = create("tts", {"name": "openai", "model": "kokoro", "base_url": real.url, "timeout": 300})
    question = tts.synthesize("What is the capital of France?")
    lm = create("audiolm", {"name": "openai", "model": "smollm2", "base_url": real.url, "timeout": 300})
    reply = lm.respond([{"role": "user", "content": [{"type": "audio", "samples": question.samples,
                                                       "rate": question.rate}]}], GenParams(max_tokens=12))
    assert reply.text.strip() and reply.audio is not None and reply.audio.duration > 0.3
    assert "paris" in reply.text.lower(), reply.text


# ---------------------------------------------------------------- the CLI


def _spawn_cli(tmp_path, *args, env=None):
    import os
    import subprocess
    import sys

    cfg = tmp_path / "serve.yaml"
    cfg.write_text("llm: {name: smollm2, id: tiny-llm}\ntts: {name: espeak}\nlimits: {max_body_bytes: 1000}\n")
    cmd = [sys.executable, "-m", "spokentod.cli", "serve", "--config", str(cfg), "--port", "0", *args]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _wait_url(proc) -> str:
    import re

    for line in proc.stderr:
        if m := re.search(r"running on (http://127\.0\.0\.1:\d+)", line, re.IGNORECASE):
            return m.group(1)
    raise AssertionError(f"server did not start (exit {proc.wait()})")


def test_cli_serves_yaml_config_with_token(tmp_path):
    proc = _spawn_cli(tmp_path, "--token-env", "CLI_TOKEN", env={"CLI_TOKEN": "abc", "SPOKENTOD_SERVE_FAULTS": ""})
    try:
        url = _wait_url(proc)
        assert httpx.get(f"{url}/v1/models").status_code == 401
        r = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer abc"})
        assert [m["id"] for m in r.json()["data"]] == ["tiny-llm", "espeak"]  # listed, not loaded (lazy)
        r = httpx.post(f"{url}/v1/audio/speech", headers={"Authorization": "Bearer abc"},
                       json={"model": "espeak", "input": "x" * 2000})
        assert r.status_code == 413
    finally:
        proc.terminate()
        proc.wait(10)


def test_cli_refuses_missing_token_variable(tmp_path):
    proc = _spawn_cli(tmp_path, "--token-env", "CLI_TOKEN_UNSET")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "CLI_TOKEN_UNSET" in err


def test_cli_faults_only_when_asked(tmp_path):
    proc = _spawn_cli(tmp_path, env={"SPOKENTOD_SERVE_FAULTS": "fail=1,status=503"})
    try:
        url = _wait_url(proc)
        assert httpx.get(f"{url}/v1/models").status_code == 503
        assert httpx.get(f"{url}/v1/models").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
