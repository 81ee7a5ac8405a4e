"""Per-backend latency and real-time factor on this CPU: in-process, through the loopback server, and
served from the cache — side by side in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/backends.py [--repeat 3] [--max-tokens 32]

Rows: Whisper tiny.en (whisper-ct2) on a Kokoro sentence, SmolLM2 chat (time to first token, tokens/s),
Kokoro and espeak TTS. Columns: median wall time in-process; the same call through `spokentod serve`
over 127.0.0.1 with the OpenAI-compatible clients (the difference is the HTTP + encoding overhead);
a cache hit (`cached(backend, Cache(...))`) and the hit speed-up = in-process / hit.
RTF = wall seconds / audio seconds (below 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from spokentod.backends.base import GenParams, create
from spokentod.backends.cache import Cache, cached
from spokentod.serve.app import create_app
from spokentod.serve.background import BackgroundServer

SENTENCE = "I would like to book a table for two people at seven o'clock tonight, near the river."
CHAT = [{"role": "system", "content": "You are a helpful restaurant booking assistant."},
        {"role": "user", "content": "Can you book a table for two at seven tonight?"}]


def timed(fn, repeat: int):
    """Median wall seconds of `repeat` calls, and the last result."""
    walls, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls), out


def client(kind: str, url: str, model: str):
    return create(kind, {"name": "openai", "model": model, "base_url": url, "timeout": 600})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    params = GenParams(max_tokens=args.max_tokens)

    t0 = time.perf_counter()
    asr, llm = create("asr", {"name": "whisper-ct2"}), create("llm", {"name": "smollm2"})
    kokoro, espeak = create("tts", {"name": "kokoro"}), create("tts", {"name": "espeak"})
    # warm-up: load every model once so no row pays a model load
    speech = kokoro.synthesize(SENTENCE)
    espeak.synthesize("warm up"), asr.transcribe(speech), llm.chat(CHAT, GenParams(max_tokens=2))
    load = time.perf_counter() - t0

    rows = []
    cache = Cache(Path(tempfile.mkdtemp(prefix="bench_cache_")) / "cache.sqlite")
    main_app = create_app({}, backends={"asr": asr, "llm": llm, "tts": kokoro})
    espeak_app = create_app({}, backends={"tts": espeak})
    with BackgroundServer(main_app) as srv, BackgroundServer(espeak_app) as srv2:
        # ASR on the Kokoro sentence
        w_in, tr = timed(lambda: asr.transcribe(speech), args.repeat)
        w_srv, _ = timed(lambda: client("asr", srv.url, "whisper-ct2").transcribe(speech), args.repeat)
        c = cached(asr, cache)
        c.transcribe(speech)
        w_hit, _ = timed(lambda: c.transcribe(speech), args.repeat)
        rows.append(("whisper-ct2", f"transcribe {speech.duration:.1f} s", w_in, w_srv, w_hit,
                     f"RTF {w_in / speech.duration:.3f} (server {w_srv / speech.duration:.3f})"))

        # LLM: non-streaming chat, then streaming for time to first token
        w_in, out = timed(lambda: llm.chat(CHAT, params), args.repeat)
        w_srv, _ = timed(lambda: client("llm", srv.url, "smollm2").chat(CHAT, params), args.repeat)
        ttft_in = statistics.median(timed(lambda: _ttft(llm, params), 1)[1] for _ in range(args.repeat))
        ttft_srv = statistics.median(client("llm", srv.url, "smollm2").stream_chat(CHAT, params).ttft
                                     for _ in range(args.repeat))
        c = cached(llm, cache)
        c.chat(CHAT, params)
        w_hit, _ = timed(lambda: c.chat(CHAT, params), args.repeat)
        rows.append(("smollm2", f"chat {out.tokens} tokens", w_in, w_srv, w_hit,
                     f"{out.tokens / w_in:.1f} tok/s, ttft {ttft_in:.3f} s (server {ttft_srv:.3f} s)"))

        # TTS
        for name, tts, url in (("kokoro", kokoro, srv.url), ("espeak", espeak, srv2.url)):
            rows.append(_tts_row(name, tts, client("tts", url, name), cached(tts, cache), args.repeat))

    print(f"spokentod backends benchmark: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}; median of {args.repeat}; model load + warm-up {load:.1f} s; "
          f"load average {os.getloadavg()[0]:.1f} (other processes share these cores)")
    print(f"sentence: {SENTENCE!r}  heard: {tr.text!r}")
    head = f"{'backend':<12} {'call':<20} {'in-process':>10} {'via server':>10} {'overhead':>9} {'cache hit':>10} {'hit speed-up':>12}  notes"
    print(head)
    print("-" * len(head))
    for name, call, w_in, w_srv, w_hit, note in rows:
        print(f"{name:<12} {call:<20} {w_in:>9.3f}s {w_srv:>9.3f}s {w_srv - w_in:>+8.3f}s {w_hit * 1000:>8.2f}ms "
              f"{w_in / w_hit:>11.0f}×  {note}")
    s = cache.stats()
    print(f"cache: {s['hits']} hits, {s['misses']} misses, {s['entries']} entries at {s['path']}")


def _tts_row(name, tts, remote, hit, repeat):
    w_in, audio = timed(lambda: tts.synthesize(SENTENCE), repeat)
    w_srv, out = timed(lambda: remote.synthesize(SENTENCE), repeat)
    hit.synthesize(SENTENCE)
    w_hit, _ = timed(lambda: hit.synthesize(SENTENCE), repeat)
    note = (f"RTF {w_in / audio.duration:.3f} (server {w_srv / audio.duration:.3f}), "
            f"first byte {out.timings.first:.3f} s")
    return name, f"speak {audio.duration:.1f} s", w_in, w_srv, w_hit, note


def _ttft(llm, params) -> float:
    t0 = time.perf_counter()
    for _ in llm.stream(CHAT, params):
        return time.perf_counter() - t0
    return float("nan")


if __name__ == "__main__":
    main()
