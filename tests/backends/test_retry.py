"""Retries, timeouts and typed errors, against the real server with test-only fault injection."""

from __future__ import annotations

import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from _serving import EchoLLM, ServerThread, ToneTTS

from spokentod.backends.base import GenParams, create
from spokentod.backends.http import parse_retry_after
from spokentod.backends.retry import RetryPolicy, retry_call, safe_call
from spokentod.errors import BackendError
from spokentod.serve.app import create_app
from spokentod.serve.middleware import Faults

HI = [{"role": "user", "content": "hello there"}]


def faulty(spec: str):
    faults = Faults.parse(spec)
    return ServerThread(create_app({}, backends={"llm": EchoLLM(), "tts": ToneTTS()}, faults=faults)), faults


def client(url: str, **kw):
    return create("llm", {"name": "openai", "model": "echo", "base_url": url, "backoff": 0.01, **kw})


# ---------------------------------------------------------------- policy and helpers (no server)


def test_full_jitter_stays_under_the_exponential_ceiling():
    p, rng = RetryPolicy(base=0.5, cap=4.0), random.Random(0)
    for attempt in range(1, 8):
        ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
        delays = [p.delay(attempt, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.5 * ceiling  # really spread over the range, not a constant
    assert p.delay(1, retry_after=2.5, rng=rng) >= 2.5  # Retry-After is a floor
    assert p.delay(1, retry_after=1e6, rng=rng) == p.max_retry_after


def test_retry_after_parsing():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


def test_non_retryable_fails_at_once_and_retryable_is_retried():
    calls = []

    def bad_request():
        calls.append(1)
        raise BackendError("llm", "x", "bad field", status=400)

    with pytest.raises(BackendError) as e:
        retry_call(bad_request, RetryPolicy(max_attempts=5), sleep=lambda s: None)
    assert len(calls) == 1 and e.value.attempts == 1

    slept = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise BackendError("llm", "x", "overloaded", status=429, retryable=True, retry_after=0.25)
        return "ok"

    assert retry_call(flaky, RetryPolicy(max_attempts=5), sleep=slept.append) == ("ok", 3)
    assert len(slept) == 2 and all(s >= 0.25 for s in slept)


def test_safe_call_keeps_errors_from_worker_threads():
    def work(i):
        if i % 2:
            raise BackendError("tts", "x", f"item {i} failed", status=502)
        return i * 10

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: safe_call(work, i), range(6)))
    assert [r.value for r in results if r.ok] == [0, 20, 40]
    failed = [r for r in results if not r.ok]
    assert len(failed) == 3 and all(isinstance(r.error, BackendError) for r in failed)
    assert "item 1 failed" in failed[0].reason() and "Traceback" in failed[0].traceback
    with pytest.raises(BackendError):
        failed[0].unwrap()


# ---------------------------------------------------------------- against the real server


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_failing_first_n_calls_is_retried_to_success(status):
    server, faults = faulty(f"fail=2,status={status}")
    with server as s:
        out = client(s.url, max_attempts=3).chat(HI, GenParams(max_tokens=8))
    assert out.text == "echo: hello there"
    assert out.timings.extra["attempts"] == 3 and faults.seen == 3


def test_retry_after_from_the_server_is_respected():
    server, _ = faulty("fail=2,status=429,retry_after=0.3")
    with server as s:
        t0 = time.perf_counter()
        out = client(s.url, max_attempts=3).chat(HI)
        elapsed = time.perf_counter() - t0
    assert out.timings.extra["attempts"] == 3 and elapsed >= 0.6


def test_streaming_start_is_retried():
    server, faults = faulty("fail=1,status=503")
    with server as s:
        out = client(s.url, max_attempts=2).stream_chat(HI)
    assert out.text == "echo: hello there" and faults.seen == 2 and out.ttft is not None
    assert out.timings.extra["attempts"] == 2


def test_server_failing_always_gives_typed_error_after_configured_attempts():
    server, faults = faulty("fail=1000,status=500")
    with server as s, pytest.raises(BackendError) as e:
        client(s.url, max_attempts=4).chat(HI)
    err = e.value
    assert (err.kind, err.backend, err.status, err.attempts) == ("llm", "openai", 500, 4)
    assert "injected fault" in err.reason and faults.seen == 4


def test_hung_server_times_out():
    server, _ = faulty("delay=5")
    with server as s:
        t0 = time.perf_counter()
        with pytest.raises(BackendError) as e:
            client(s.url, timeout=0.3, max_attempts=2).chat(HI)
        elapsed = time.perf_counter() - t0
    assert "timeout after 0.3 s" in e.value.reason and e.value.attempts == 2
    assert elapsed < 3


def test_malformed_json_is_a_typed_error_not_retried():
    server, faults = faulty("malformed=1")
    with server as s, pytest.raises(BackendError) as e:
        client(s.url, max_attempts=3).chat(HI)
    assert "malformed JSON" in e.value.reason and e.value.attempts == 1 and faults.seen == 1


def test_non_utf8_body_is_a_typed_error():
    server, _ = faulty("bad_utf8=1")
    with server as s, pytest.raises(BackendError) as e:
        create("tts", {"name": "openai", "model": "tone", "base_url": s.url}).synthesize("hi")
    # the speech client expects WAV, gets JSON junk
    assert "not WAV" in e.value.reason
    server, _ = faulty("bad_utf8=1")
    with server as s, pytest.raises(BackendError) as e:
        client(s.url).chat(HI)
    assert "not valid UTF-8" in e.value.reason and "0xe9" in e.value.reason


def test_client_errors_are_not_retried():
    server, _ = faulty("")
    with server as s, pytest.raises(BackendError) as e:
        create("llm", {"name": "openai", "model": "nope", "base_url": s.url, "max_attempts": 5}).chat(HI)
    assert e.value.status == 404 and e.value.attempts == 1 and "'nope' is not served" in e.value.reason


def test_connection_refused_is_retried_then_typed():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BackendError) as e:
        client(f"http://127.0.0.1:{port}/v1", max_attempts=2).chat(HI)
    assert "cannot connect" in e.value.reason and e.value.attempts == 2 and e.value.status is None


def test_missing_api_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("SPOKENTOD_TEST_KEY", raising=False)
    with pytest.raises(BackendError, match="SPOKENTOD_TEST_KEY"):
        client("http://127.0.0.1:9/v1", api_key_env="SPOKENTOD_TEST_KEY").chat(HI)


def test_fault_spec_is_validated():
    assert Faults.parse("fail=2,status=429,retry_after=0.5") == Faults(fail_first=2, fail_status=429, retry_after=0.5)
    with pytest.raises(ValueError, match="bad fault spec"):
        Faults.parse("explode=1")


def test_streaming_malformed_or_cut_responses_are_typed_errors():
    server, _ = faulty("malformed=1")
    with server as s, pytest.raises(BackendError, match="malformed JSON"):
        client(s.url).stream_chat(HI)
    server, _ = faulty("cut=1")
    with server as s:
        pieces = []
        with pytest.raises(BackendError, match=r"stream ended before \[DONE\]"):
            client(s.url).stream_chat(HI, on_text=pieces.append)
    assert pieces == ["par"]  # what arrived was delivered; the cut is still an error


def test_text_that_is_not_valid_unicode_is_named():
    tts = create("tts", {"name": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(BackendError, match="text is not valid Unicode"):
        tts.synthesize("caf\udce9")  # a lone surrogate, as left by decoding bytes with surrogateescape
    with pytest.raises(BackendError, match=r"messages\[0\].content is not valid UTF-8 \(byte 0xe9"):
        client("http://127.0.0.1:9/v1").chat([{"role": "user", "content": b"caf\xe9"}])
    with pytest.raises(BackendError, match="empty"):
        tts.synthesize("   ")
