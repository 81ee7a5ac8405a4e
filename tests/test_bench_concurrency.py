"""Concurrency limits: global workers, per-system pools, per-backend call limits (shared across systems)."""

from __future__ import annotations

import threading
import time

from spokentod.backends.base import Backend, Completion, Timings
from spokentod.bench.runner import BackendWrapper, error_reason, run_bench
from spokentod.systems.base import SystemReply


class Gauge:
    """Counts calls in flight and remembers the most seen at once."""

    def __init__(self):
        self.now = self.most = 0
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


class SlowLLM(Backend):
    kind, name = "llm", "slow"

    def __init__(self, gauge: Gauge, url: str | None = None, tag: str = ""):
        self.gauge, self.tag = gauge, tag
        if url:
            self.base_url = url

    def identity(self):
        return {**super().identity(), "tag": self.tag, "base_url": getattr(self, "base_url", None)}

    def chat(self, messages, params=None):
        with self.gauge:
            time.sleep(0.02)
        return Completion("ok", timings=Timings(wall=0.02))

    def stream(self, messages, params=None):
        with self.gauge:
            for w in ("a", "b", "c"):
                time.sleep(0.01)
                yield w


def _hammer(fn, n: int = 8) -> None:
    threads = [threading.Thread(target=fn) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_named_limit_gives_each_server_its_slots_shared_by_every_system():
    gauge, other = Gauge(), Gauge()
    wrap = BackendWrapper({"slow": 2, "slow@http://z/v1": 1})
    a, b = wrap("llm", SlowLLM(gauge, "http://x/v1", "a")), wrap("llm", SlowLLM(gauge, "http://x/v1", "b"))
    c = wrap("llm", SlowLLM(other, "http://y/v1"))
    z = wrap("llm", SlowLLM(Gauge(), "http://z/v1"))
    _hammer(lambda: [a.chat([]) for _ in range(3)] + [b.chat([]) for _ in range(3)] + [c.chat([])])
    assert gauge.most == 2 and other.most == 2  # x's two instances share 2 slots; y has its own 2
    _hammer(lambda: z.chat([]))
    assert z.gauge.most == 1  # name@url overrides for that one server


def test_in_process_backends_default_to_one_call_at_a_time_and_streams_hold_their_slot():
    gauge = Gauge()
    llm = BackendWrapper({})("llm", SlowLLM(gauge))
    _hammer(lambda: [llm.chat([]), "".join(llm.stream([]))])
    assert gauge.most == 1


def test_same_backend_identity_is_built_once_and_http_backends_are_not_limited():
    gauge = Gauge()
    wrap = BackendWrapper({})
    first = wrap("llm", SlowLLM(gauge, "http://x/v1"))
    assert wrap("llm", SlowLLM(gauge, "http://x/v1")) is first  # one model in memory for every system
    _hammer(lambda: first.chat([]))
    assert gauge.most > 2


GAUGE = Gauge()


class Busy:
    def __init__(self, name, cfg, audio_root=None):
        self.name = name

    def identity(self):
        return {"type": "busy"}

    def respond(self, context, user_turn, audio_out=None):
        with GAUGE:
            time.sleep(0.01)
        return SystemReply(text="ok")


def test_workers_bound_the_turns_in_flight(tmp_path):
    cfg = {"dataset": {"corpus": "demo", "limit": 3}, "out": str(tmp_path / "run"), "cache": {"enabled": False},
           "concurrency": {"workers": 3},
           "systems": {"x": {"type": f"{__name__}:Busy"}, "y": {"type": f"{__name__}:Busy", "concurrency": 1}}}
    summary = run_bench(cfg, progress=False)
    assert summary.total("ok") == summary.total("planned") > 0
    assert 1 < GAUGE.most <= 3


def test_error_reasons_are_short_and_countable():
    assert error_reason("llm: BackendError: llm backend 'openai': cannot connect to http://x: refused") == \
        "llm: connection"
    assert error_reason("llm: BackendError: llm backend 'openai': server said: boom (HTTP 503) after 3 attempts") \
        == "llm: http 503"
    assert error_reason("asr: BackendError: asr backend 'openai': timeout after 5 s (ReadTimeout)") == "asr: timeout"
    assert error_reason("llm: BackendError: llm backend 'openai': malformed JSON in response") == "llm: bad response"
    assert error_reason("tts: TTSFailure: ValueError: bad text") == "tts: TTSFailure"
    assert error_reason("crash: KeyError: 'x'") == "crash: KeyError"
    assert error_reason("weird") == "system: weird"
