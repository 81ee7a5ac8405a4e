"""Concurrency limits: global workers, per-system pools, per-backend call limits (shared across systems)."""

from __future__ import annotations

import threading
import time

from spokentod.backends.base import Backend, Completion, Timings
from spokentod.backends.limits import BackendWrapper
from spokentod.bench.run import run_bench
from spokentod.bench.runner import _stated_reason
from spokentod.errors import BackendError
from spokentod.systems._common import failed
from spokentod.systems.base import SystemReply
from spokentod.systems.cascade import TTSFailure


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
        if url:  # talks to a server: declares itself remote, as the OpenAI-compatible clients do
            self.base_url, self.remote = url, True

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
    speaks = False

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
    def reason(stage: str, exc: BaseException) -> str:
        return failed(SystemReply(), stage, exc, time.perf_counter()).error_reason

    def backend_error(kind: str, why: str, **kw) -> BackendError:
        return BackendError(kind, "openai", why, **kw)

    assert reason("llm", backend_error("llm", "cannot connect to http://x: refused", cause="connection")) == \
        "llm: connection"
    assert reason("llm", backend_error("llm", "server said: boom", status=503, attempts=3)) == "llm: http 503"
    assert reason("asr", backend_error("asr", "timeout after 5 s (ReadTimeout)", cause="timeout")) == "asr: timeout"
    assert reason("llm", backend_error("llm", "malformed JSON in response", cause="bad response")) == \
        "llm: bad response"
    assert reason("llm", backend_error("llm", "text to synthesize is empty")) == "llm: BackendError"
    try:  # a stage's own wrapper names the stage; the backend error behind it gives the cause
        raise TTSFailure("BackendError: timeout") from backend_error("tts", "timeout after 5 s", cause="timeout")
    except TTSFailure as e:
        assert reason("tts", e) == "tts: timeout"
    try:
        raise TTSFailure("ValueError: bad text") from ValueError("bad text")
    except TTSFailure as e:
        assert reason("tts", e) == "tts: TTSFailure"
    # plug-in systems that state an error only as text: "<stage>: <Type>: message"
    assert _stated_reason("crash: KeyError: 'x'") == "crash: KeyError"
    assert _stated_reason("weird") == "system: weird"
