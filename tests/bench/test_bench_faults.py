"""Faults: failing backends are recorded and the run goes on; unwritable or full output is a clear error.

Backends fail for real: the `openai` LLM backend against a port where nothing listens, and against our
own `serve` with its test-only fault injection (HTTP 500, malformed JSON, a stall past the timeout).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spokentod.backends.base import Backend, Completion, GenParams, Timings
from spokentod.bench.run import run_bench
from spokentod.cli import app
from spokentod.errors import BenchError
from spokentod.rundir.store import read_records

REPO = Path(__file__).resolve().parents[2]


class EchoLLM(Backend):
    """The model behind the test server: instant and deterministic (the server and client are under test)."""

    kind, name = "llm", "echo"

    def chat(self, messages, params: GenParams | None = None) -> Completion:
        last = messages[-1]["content"]
        return Completion(text=f"echo: {str(last)[:24]}", tokens=3, timings=Timings(wall=0.0))

    def stream(self, messages, params=None):
        yield self.chat(messages, params).text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(faults: str | None = None, port: int = 0) -> Iterator[str]:
    """`spokentod serve`'s app on a real loopback socket in a thread; yields its base URL."""
    from spokentod.serve.app import create_app
    from spokentod.serve.background import BackgroundServer

    with BackgroundServer(create_app(backends={"llm": EchoLLM()}, faults=faults), port=port) as server:
        yield server.url


def _llm(url: str, **kw) -> dict:
    return {"name": "openai", "base_url": url, "model": "echo", "max_attempts": 1, "timeout": 2, **kw}


def _cfg(tmp_path: Path, systems: dict, limit: int = 2) -> dict:
    return {"dataset": {"corpus": "demo", "limit": limit}, "out": str(tmp_path / "run"), "cache": {"enabled": False},
            "concurrency": {"workers": 4}, "systems": systems}


def _records(path: Path) -> list[dict]:
    return read_records(path)[0]


def test_failing_backends_are_recorded_and_the_run_goes_on(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with serving("fail=100000,status=500") as err500, serving("malformed=100000") as garbage, \
            serving("delay=3") as stalled, serving() as healthy:
        systems = {"dead": {"type": "text", "llm": _llm(dead)},
                   "http500": {"type": "text", "llm": _llm(err500)},
                   "garbage": {"type": "text", "llm": _llm(garbage)},
                   "stalled": {"type": "text", "llm": _llm(stalled, timeout=0.5)},
                   "healthy": {"type": "text", "llm": _llm(healthy)}}
        summary = run_bench(_cfg(tmp_path, systems), progress=False)
    assert summary.status == "finished"
    n = summary.counts["healthy"]["planned"]
    assert n > 0 and summary.counts["healthy"]["ok"] == n
    expected = {"dead": "llm: connection", "http500": "llm: http 500", "garbage": "llm: bad response",
                "stalled": "llm: timeout"}
    for system, reason in expected.items():
        recs = _records(tmp_path / "run/results" / f"{system}.jsonl")
        assert len(recs) == n, system  # every turn recorded, none skipped
        assert {r["error_reason"] for r in recs} == {reason}, system
        assert all(r["error"] and r["text"] == "" for r in recs)

    result = CliRunner().invoke(app, ["bench", "status", str(tmp_path / "run")], terminal_width=200)
    assert result.exit_code == 0, result.output
    for system, reason in expected.items():
        assert any(system in line and reason in line and line.rstrip(" │").endswith(str(n))
                   for line in result.output.splitlines()), (system, result.output)


def test_resume_retries_failed_turns_with_a_new_attempt(tmp_path):
    port = free_port()
    cfg = _cfg(tmp_path, {"t": {"type": "text", "llm": _llm(f"http://127.0.0.1:{port}/v1")}}, limit=1)
    first = run_bench(cfg, progress=False)  # the server is not up yet
    n = first.counts["t"]["planned"]
    assert first.counts["t"]["errors"] == n
    with serving(port=port):
        kept = run_bench(cfg, progress=False, retry_errors=False)
        assert kept.counts["t"]["ran"] == 0  # --keep-errors: failed turns stay failed
        second = run_bench(cfg, progress=False)
    assert second.counts["t"] == {"planned": n, "done": n, "ok": n, "errors": 0, "missing": 0, "ran": n,
                                  "ran_errors": 0}
    recs = _records(tmp_path / "run/results/t.jsonl")
    assert [r["attempt"] for r in recs] == [1] * n + [2] * n  # the failed attempts are kept, superseded
    meta = json.loads((tmp_path / "run/run.json").read_text())
    assert [s["status"] for s in meta["sessions"]] == ["finished"] * 3
    result = CliRunner().invoke(app, ["bench", "status", str(tmp_path / "run")], terminal_width=200)
    assert "errors by reason" not in result.output


def test_unwritable_output_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(_cfg(tmp_path, {"t": {"type": "text", "llm": _llm("http://127.0.0.1:9/v1")}})))
    result = CliRunner().invoke(app, ["bench", "run", str(cfg), "--out", str(blocker / "run"), "--no-progress"],
                                terminal_width=200)
    assert result.exit_code == 1
    assert "output directory" in result.output and "not writable" in result.output
    with pytest.raises(BenchError, match="not writable"):
        run_bench(json.loads(cfg.read_text()), out=blocker / "run", progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_dir_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(BenchError, match="not writable"):
        run_bench(_cfg(tmp_path, {"t": {"type": "text", "llm": _llm("http://127.0.0.1:9/v1")}}), out=ro,
                  progress=False)


PLUGIN = textwrap.dedent("""
    from spokentod.systems.base import SystemReply

    class Wordy:
        speaks = False

        def __init__(self, name, cfg, audio_root=None):
            self.name = name

        def identity(self):
            return {"type": "wordy"}

        def respond(self, context, user_turn, audio_out=None):
            return SystemReply(text=f"{context.dialogue_id}#{user_turn.index} " + "words " * 60)
""")


def test_full_disk_stops_the_run_cleanly_and_resume_completes(tmp_path):
    """RLIMIT_FSIZE makes writes past 6 kB fail mid-record, as a full disk does: the run stops with a clear
    message, the results file ends with a complete record, and rerunning (disk space back) completes."""
    (tmp_path / "bench_wordy.py").write_text(PLUGIN)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"dataset": {"corpus": "demo", "limit": 3}, "out": str(tmp_path / "run"),
                               "cache": {"enabled": False}, "systems": {"w": {"type": "bench_wordy:Wordy"}}}))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    limit = textwrap.dedent("""
        import resource, runpy, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))
        sys.argv = ["spokentod", "bench", "run", sys.argv[1], "--no-progress"]
        runpy.run_module("spokentod.cli", run_name="__main__")
    """)
    out = subprocess.run([sys.executable, "-c", limit, str(cfg)], capture_output=True, check=False, text=True, env=env,
                         timeout=120, cwd=REPO)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "cannot write results to" in out.stderr and "File too large" in out.stderr
    results = tmp_path / "run/results/w.jsonl"
    data = results.read_bytes()
    assert 0 < len(data) <= 6000 and data.endswith(b"\n")
    partial, dropped = read_records(results)
    assert dropped == 0 and len(partial) >= 1
    meta = json.loads((tmp_path / "run/run.json").read_text())
    assert meta["status"] == "failed" and "File too large" in meta["sessions"][-1]["error"]

    done = subprocess.run([sys.executable, "-m", "spokentod.cli", "bench", "run", str(cfg), "--no-progress"],
                          capture_output=True, check=False, text=True, env=env, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    recs = _records(results)
    assert len(recs) == len({(r["dialogue_id"], r["turn"]) for r in recs}) == meta["counts"]["w"]["planned"]
    assert recs[:len(partial)] == partial
