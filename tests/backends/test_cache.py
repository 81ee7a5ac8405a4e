"""The content-addressed SQLite cache: hits, misses, opt-out, audio, concurrency, and a real SmolLM2."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
import time

import numpy as np
import pytest
from _serving import EchoLLM, LengthASR, ToneTTS

from spokentod.audio import Waveform, wav_bytes
from spokentod.backends.base import LLM, TTS, GenParams, create
from spokentod.backends.cache import Cache, cached, make_key

HI = [{"role": "user", "content": "book a table for two"}]


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "c.sqlite")


def test_second_identical_call_is_served_without_the_backend(cache):
    llm = EchoLLM()
    c = cached(llm, cache)
    assert isinstance(c, LLM)
    first = c.chat(HI, GenParams(max_tokens=3))
    second = c.chat(HI, GenParams(max_tokens=3))
    assert llm.calls == 1 and second.text == first.text == "echo: book a"
    assert second.tokens == first.tokens and second.timings.extra["cache_hit"] == 1.0
    assert c.chat(HI).text == c.chat(HI, GenParams()).text  # None means the default params: one key
    assert llm.calls == 2
    s = cache.stats()
    assert (s["hits"], s["misses"], s["stores"], s["entries"]) == (2, 2, 2, 2)


@pytest.mark.parametrize("change", [{"temperature": 0.7}, {"max_tokens": 4}, {"seed": 1}, {"top_p": 0.9},
                                    {"stop": ["."]}])
def test_a_changed_parameter_misses(cache, change):
    llm = EchoLLM()
    c = cached(llm, cache)
    c.chat(HI, GenParams(max_tokens=3))
    c.chat(HI, GenParams(**{"max_tokens": 3, **change}))
    assert llm.calls == 2


def test_changed_messages_or_backend_identity_miss(cache):
    llm = EchoLLM()
    c = cached(llm, cache)
    c.chat(HI)
    c.chat([{"role": "user", "content": "book a table for three"}])
    other = EchoLLM()
    other.identity = lambda: {**EchoLLM().identity(), "model": "another"}  # e.g. another checkpoint
    cached(other, cache).chat(HI)
    assert llm.calls == 2 and other.calls == 1


def test_stream_through_cache(cache):
    llm = EchoLLM()
    c = cached(llm, cache)
    pieces = list(c.stream(HI))
    assert len(pieces) > 1 and llm.calls == 1
    assert list(c.stream(HI)) == ["".join(pieces)]  # a hit replays the text as one piece
    assert c.chat(HI).text == "".join(pieces) and llm.calls == 1  # chat and stream share the key
    partial = c.stream([{"role": "user", "content": "stop early please"}])
    next(partial)
    partial.close()  # an abandoned stream is not a result: nothing stored
    list(c.stream([{"role": "user", "content": "stop early please"}]))
    assert llm.calls == 3


def test_failed_calls_are_never_cached(cache):
    llm = EchoLLM(fail_first=1)
    c = cached(llm, cache)
    with pytest.raises(RuntimeError, match="echo failure"):
        c.chat(HI)
    assert c.chat(HI).text.startswith("echo:") and llm.calls == 2
    c.chat(HI)
    assert llm.calls == 2


def test_opt_out(tmp_path, monkeypatch):
    llm = EchoLLM()
    c = cached(llm, Cache(tmp_path / "off.sqlite", enabled=False))
    c.chat(HI), c.chat(HI)
    assert llm.calls == 2 and not (tmp_path / "off.sqlite").exists()
    monkeypatch.setenv("SPOKENTOD_NO_CACHE", "1")
    c = cached(llm, Cache(tmp_path / "env.sqlite"))
    c.chat(HI), c.chat(HI)
    assert llm.calls == 4 and c.cache.stats()["enabled"] is False


def test_audio_is_stored_exactly_and_keyed_by_content(cache, tmp_path):
    tts = ToneTTS()
    c = cached(tts, cache)
    assert isinstance(c, TTS)
    a, b = c.synthesize("two words"), c.synthesize("two words")
    assert tts.calls == 1 and b.rate == a.rate and np.array_equal(a.samples, b.samples)
    c.synthesize("two words", voice="other")
    assert tts.calls == 2

    asr = LengthASR()
    ca = cached(asr, cache)
    samples = (0.1 * np.sin(np.arange(8000) / 7)).astype(np.float32)
    p1, p2 = tmp_path / "one.wav", tmp_path / "two.wav"
    p1.write_bytes(wav_bytes(samples, 16000))
    p2.write_bytes(wav_bytes(samples, 16000))
    ca.transcribe(Waveform(samples, 16000)), ca.transcribe(Waveform(samples, 16000))
    assert asr.calls == 1
    ca.transcribe(Waveform(samples * 0.5, 16000))
    assert asr.calls == 2
    ca.transcribe(str(p1)), ca.transcribe(str(p2))  # same bytes under two names: one entry
    assert asr.calls == 3


def test_audio_in_messages_is_hashed():
    ident = {"kind": "audiolm", "name": "x"}
    audio = np.zeros(100, np.float32)
    msg = lambda a: [{"role": "user", "content": [{"type": "audio", "samples": a, "rate": 16000}]}]
    assert make_key(ident, "op", msg(audio)) == make_key(ident, "op", msg(audio.copy()))
    audio2 = audio.copy()
    audio2[50] = 0.5
    assert make_key(ident, "op", msg(audio)) != make_key(ident, "op", msg(audio2))


# ---------------------------------------------------------------- concurrency


def _writer(path: str, worker: int, n: int) -> None:
    c = Cache(path)
    llm = EchoLLM()
    cl = cached(llm, c)
    for i in range(n):
        # half the keys are shared by every writer, half are this writer's own
        text = f"shared {i}" if i % 2 == 0 else f"own {worker} {i}"
        out = cl.chat([{"role": "user", "content": text}])
        assert out.text == f"echo: {text}"


def _check_db(path, workers, n):
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        count = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    expected = (n + 1) // 2 + workers * (n // 2)
    assert count == expected


def test_concurrent_threads_do_not_corrupt(tmp_path):
    path = str(tmp_path / "t.sqlite")
    errors = []

    def run(w):
        try:
            _writer(path, w, 60)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    _check_db(path, 8, 60)


def test_concurrent_processes_do_not_corrupt(tmp_path):
    path = str(tmp_path / "p.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in range(2)]
    [p.start() for p in procs]
    _writer(path, 2, 150)  # and this process at the same time
    [p.join(120) for p in procs]
    assert [p.exitcode for p in procs] == [0, 0]
    _check_db(path, 3, 150)


# ---------------------------------------------------------------- the real embedded LLM


class CountingLLM:
    """Counts calls into a real backend; everything else is the backend's own."""

    def __init__(self, backend):
        self.backend, self.calls = backend, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def chat(self, messages, params=None):
        self.calls += 1
        return self.backend.chat(messages, params)

    def stream(self, messages, params=None):
        self.calls += 1
        return self.backend.stream(messages, params)


@pytest.mark.slow
def test_cache_with_real_smollm2(cache):
    real = CountingLLM(create("llm", {"name": "smollm2"}))
    c = cached(real, cache)
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    t0 = time.perf_counter()
    miss = c.chat(msgs, GenParams(max_tokens=16))
    t_miss = time.perf_counter() - t0
    t0 = time.perf_counter()
    hit = c.chat(msgs, GenParams(max_tokens=16))
    t_hit = time.perf_counter() - t0
    assert real.calls == 1 and hit.text == miss.text and miss.text.strip()
    assert t_hit < t_miss / 5, (t_hit, t_miss)
    c.chat(msgs, GenParams(max_tokens=16, temperature=0.7, seed=1))
    assert real.calls == 2
    c.chat(msgs, GenParams(max_tokens=8))
    assert real.calls == 3
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 3
