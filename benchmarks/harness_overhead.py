"""How much the bench harness itself costs, measured in one run against our own `spokentod serve`.

The server (a subprocess) answers chat completions through its test-only fault injection with a fixed
delay per call (default 50 ms) and at most 8 requests in flight ("8 slots"); the model behind it answers
instantly, so every millisecond beyond the delay is HTTP, the system and the harness. The bench runs the
text system (`openai` LLM backend) over the demo corpus (2 seeds: ~250 turns) and prints:

  (a) harness wall time / total backend time at concurrency 1     goal <= 1.03
  (b) throughput at concurrency 8 / throughput at concurrency 1    goal >= 6
  (c) fully cached re-run time / first run time                    goal <= 0.05

(a) and (b) run without the backend cache; (c) fills a fresh cache in a first run, then repeats the run
into a new directory, every call a hit (its first run's (a) is printed too). Wall time is the whole `run_bench` call: config, corpus, systems, run.json, every record written.
Backend time is the sum of the per-turn LLM call times the system recorded (HTTP round trip included).

    python benchmarks/harness_overhead.py [--delay 0.05] [--slots 8] [--seeds 2] [--progress]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOALS = {"a": 1.03, "b": 6.0, "c": 0.05}


# ---------------------------------------------------------------- the server side (subprocess)


def serve(port: int, delay: float, slots: int) -> None:
    import uvicorn

    from spokentod.backends.base import Backend, Completion, Timings
    from spokentod.serve.app import create_app
    from spokentod.serve.middleware import Faults

    class FixedLLM(Backend):
        """Instant, deterministic answer of ~12 words that depends on the request (distinct cache keys)."""

        kind, name = "llm", "fixed"

        def chat(self, messages, params=None) -> Completion:
            seed = sum(map(ord, json.dumps(messages)[-200:]))
            return Completion(text=" ".join(f"word{(seed + i) % 97}" for i in range(12)) + ".", tokens=13,
                              timings=Timings(wall=0.0))

        def stream(self, messages, params=None):
            yield self.chat(messages, params).text

    class Slots:
        """At most `n` /v1/ requests in flight, like a model server with n parallel slots."""

        def __init__(self, app, n: int):
            self.app, self.n, self.sem = app, n, None

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
                return await self.app(scope, receive, send)
            self.sem = self.sem or asyncio.Semaphore(self.n)
            async with self.sem:
                await self.app(scope, receive, send)

    app = create_app(backends={"llm": FixedLLM()}, faults=Faults(delay=delay))
    # A socket created with IPPROTO_TCP so asyncio sets TCP_NODELAY (see serve/background.py): without it
    # small responses can wait for a delayed ACK and the "fixed" delay is not fixed.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(Slots(app, slots), log_level="warning", access_log=False, lifespan="off"))
    server.run(sockets=[sock])


def start_server(delay: float, slots: int) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--delay", str(delay),
                             "--slots", str(slots)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, f"{url}/v1"
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the benchmark server did not start")
        time.sleep(0.1)


# ---------------------------------------------------------------- the client side (this process)


def config(url: str, out: Path, workers: int, seeds: int, cache: Path | None = None) -> dict:
    return {"dataset": {"corpus": "demo"}, "out": str(out), "seeds": list(range(seeds)),
            "cache": {"enabled": cache is not None, "path": str(cache) if cache else None},
            "concurrency": {"workers": workers, "backends": {"openai": workers}},
            "systems": {"text": {"type": "text", "concurrency": workers, "params": {"max_tokens": 16},
                                 "llm": {"name": "openai", "base_url": url, "model": "fixed", "max_attempts": 1}}}}


def timed_run(cfg: dict, progress: bool) -> tuple[float, int, float]:
    """(wall seconds of the whole run_bench call, turns, summed backend seconds)."""
    from spokentod.bench.run import run_bench
    from spokentod.rundir.store import read_records

    t0 = time.perf_counter()
    summary = run_bench(cfg, progress=progress)
    wall = time.perf_counter() - t0
    recs, _ = read_records(Path(cfg["out"]) / "results" / "text.jsonl")
    if summary.total("errors") or len(recs) != summary.total("planned"):
        raise SystemExit(f"benchmark run had errors or gaps: {summary.counts}")
    return wall, len(recs), sum(r["timings"]["llm"] for r in recs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delay", type=float, default=0.05, help="seconds the server waits per chat call")
    ap.add_argument("--slots", type=int, default=8, help="requests the server serves at once")
    ap.add_argument("--seeds", type=int, default=2, help="passes over the demo corpus (123 turns each)")
    ap.add_argument("--progress", action="store_true", help="show the bench progress bars")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: run the server on this port
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve, args.delay, args.slots)

    proc, url = start_server(args.delay, args.slots)
    try:
        with tempfile.TemporaryDirectory(prefix="harness-overhead-") as tmp:
            t = Path(tmp)
            from spokentod.bench.run import run_bench

            # warm-up (imports, first connection) so no measured run pays for it
            run_bench(config(url, t / "warm", 1, 1) | {"dataset": {"corpus": "demo", "limit": 1}}, progress=False)
            wall1, n1, backend1 = timed_run(config(url, t / "c1", 1, args.seeds), args.progress)
            wall8, n8, _ = timed_run(config(url, t / "c8", args.slots, args.seeds), args.progress)
            # (c): a first run that fills a fresh cache, then the same run again into a new directory
            cache = t / "cache.sqlite"
            wall_f, _, backend_f = timed_run(config(url, t / "first", 1, args.seeds, cache), args.progress)
            wall_c, _, _ = timed_run(config(url, t / "cached", 1, args.seeds, cache), args.progress)
    finally:
        proc.terminate()
        proc.wait(10)

    a, b, c = wall1 / backend1, (n8 / wall8) / (n1 / wall1), wall_c / wall_f
    ok = {"a": a <= GOALS["a"], "b": b >= GOALS["b"], "c": c <= GOALS["c"]}
    mark = {True: "ok", False: "MISSED"}
    print(f"\nharness overhead: text system vs `spokentod serve` (fixed {args.delay * 1000:.0f} ms per chat call, "
          f"{args.slots} slots), {n1} turns per run, python {sys.version.split()[0]}")
    print(f"(a) harness wall / backend time, concurrency 1 : {a:6.3f}  goal <= {GOALS['a']}  {mark[ok['a']]:6}"
          f"  wall {wall1:.2f} s, backend {backend1:.2f} s")
    print(f"(b) throughput concurrency {args.slots} / concurrency 1  : {b:6.2f}  goal >= {GOALS['b']}   "
          f"{mark[ok['b']]:6}  {n1 / wall1:.1f} → {n8 / wall8:.1f} turns/s")
    print(f"(c) cached re-run / first run                 : {c:6.3f}  goal <= {GOALS['c']}  {mark[ok['c']]:6}"
          f"  {wall_c:.2f} s vs {wall_f:.2f} s")
    print(f"    (a) with the cache on (the first run of (c)): {wall_f / backend_f:.3f}  (cache lookups and stores "
          "count as harness time)")
    print(f"\n    (a) {a:.3f}    (b) {b:.2f}    (c) {c:.3f}")


if __name__ == "__main__":
    main()
