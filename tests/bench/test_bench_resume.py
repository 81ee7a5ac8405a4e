"""kill -9 at random moments, several times in a row, then resume: the final results equal an uninterrupted
run's (same records, none lost, none duplicated; same reply text and audio). Real subprocesses of
`python -m spokentod.cli bench run`.

Two versions: a plug-in system that takes a little time per turn and writes its WAV slowly in two halves
(many kills in a few seconds, kills land mid-audio-write), and the real text system with SmolLM2 (greedy
decoding, so the text must match exactly).
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest
import soundfile as sf

from spokentod.rundir.store import read_records

REPO = Path(__file__).resolve().parents[2]

PLUGIN = textwrap.dedent("""
    import hashlib, io, time
    import numpy as np, soundfile as sf
    from spokentod.systems.base import SystemReply

    class Slow:
        '''Deterministic replies that depend on the whole context; audio written slowly, not atomically.'''

        speaks = True

        def __init__(self, name, cfg, audio_root=None):
            self.name, self.delay = name, cfg.get("delay", 0.05)

        def identity(self):
            return {"type": "slow", "delay": self.delay}

        def respond(self, context, user_turn, audio_out=None):
            h = hashlib.sha256(repr([(t.index, t.text) for t in context.turns] + [user_turn.text]).encode())
            text = f"{self.name}:{context.dialogue_id}#{user_turn.index}:{h.hexdigest()[:12]}"
            time.sleep(self.delay)
            if audio_out is not None:
                rng = np.random.default_rng(int(h.hexdigest()[:8], 16))
                buf = io.BytesIO()
                sf.write(buf, rng.uniform(-0.5, 0.5, 8000).astype("float32"), 16000, format="WAV", subtype="PCM_16")
                data = buf.getvalue()
                with open(audio_out, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                    time.sleep(self.delay)
                    f.write(data[len(data) // 2:])
            return SystemReply(text=text, audio_path=str(audio_out) if audio_out else None, timings={"total": self.delay})
""")


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _cmd(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "spokentod.cli", "bench", "run", str(cfg), "--out", str(out), "--no-progress"]


def _count(out: Path) -> int:
    return sum(len(read_records(p)[0]) for p in (out / "results").glob("*.jsonl")) if (out / "results").exists() else 0


def _kill_at_random(cmd: list[str], env: dict, out: Path, rng: random.Random, after_new: int, jitter: float,
                    timeout: float) -> bool:
    """Start a run, wait for `after_new` new records (0: kill during start-up), wait a random extra time,
    then SIGKILL it. Returns False if the run finished first."""
    before = _count(out)
    p = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while p.poll() is None and _count(out) < before + after_new:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)
    time.sleep(rng.uniform(0, jitter))
    if p.poll() is not None:
        assert p.returncode == 0, p.stderr.read().decode()
        return False
    p.send_signal(signal.SIGKILL)
    p.wait()
    return True


def _final(out: Path) -> dict[tuple, dict]:
    recs = []
    for p in sorted((out / "results").glob("*.jsonl")):
        got, dropped = read_records(p)
        assert dropped == 0, f"{p} ends with a half-written record after a finished run"
        recs += got
    keys = [(r["system"], r["dialogue_id"], r["turn"], r["seed"]) for r in recs]
    assert len(keys) == len(set(keys)), "duplicated records"
    return dict(zip(keys, recs))


def _compare(ref_dir: Path, out: Path, audio: bool) -> None:
    ref, got = _final(ref_dir), _final(out)
    assert got.keys() == ref.keys()  # none lost, none extra
    for k, r in ref.items():
        g = got[k]
        assert (g["text"], g["error"], g["context_turns"], g["context_chars"]) == \
            (r["text"], r["error"], r["context_turns"], r["context_chars"]), k
        if audio:
            a, b = sf.read(ref_dir / r["audio_path"])[0], sf.read(out / g["audio_path"])[0]
            assert (a == b).all(), k  # the referenced file is whole and is this turn's audio
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and all(c["missing"] == 0 for c in meta["counts"].values())


def _kill_resume(cfg: Path, tmp_path: Path, kills: list[tuple[int, float]], seed: int, timeout: float,
                 min_kills: int) -> Path:
    rng = random.Random(seed)
    out, env = tmp_path / "killed", _env(tmp_path)
    killed = 0
    for after_new, jitter in kills:
        killed += _kill_at_random(_cmd(cfg, out), env, out, rng, after_new, jitter, timeout)
    print("kills landed", killed, "of", len(kills))
    assert killed >= min_kills, "the run kept finishing before it could be killed"
    done = subprocess.run(_cmd(cfg, out), env=env, cwd=REPO, capture_output=True, check=False, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return out


def test_kill9_many_times_then_resume_equals_uninterrupted_run(tmp_path):
    (tmp_path / "bench_slow.py").write_text(PLUGIN)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({
        "dataset": {"corpus": "demo", "limit": 4}, "cache": {"enabled": False}, "concurrency": {"workers": 3},
        "systems": {"gold": {"type": "bench_slow:Slow", "delay": 0.12, "concurrency": 3},
                    "own": {"type": "bench_slow:Slow", "delay": 0.08, "history": "self", "concurrency": 2}}}))
    ref = tmp_path / "ref"
    done = subprocess.run(_cmd(cfg, ref), env=_env(tmp_path), cwd=REPO, capture_output=True, check=False, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # The run's own time from run.json, not the process's: interpreter start-up and imports (seconds longer on
    # a cold page cache, as for the first run on a fresh machine) are left out, so the window is never longer
    # than what a warm killed run takes.
    wall = json.loads((ref / "run.json").read_text())["sessions"][0]["wall_s"]
    seed = random.randrange(1 << 30)
    print("kill schedule seed", seed, "reference run", wall)
    # The first kill lands somewhere in start-up or the first records: within the first half of a whole run
    # (a fixed window would let a fast machine finish the run before any kill).
    out = _kill_resume(cfg, tmp_path, [(0, wall / 2)] + [(3, 0.1)] * 5, seed, timeout=300, min_kills=4)
    _compare(ref, out, audio=True)
    # nothing a record points at is a leftover partial file, and each turn has one final WAV
    for r in _final(out).values():
        assert not r["audio_path"].endswith(".partial.wav")
    meta = json.loads((out / "run.json").read_text())  # a kill during start-up leaves no session behind
    assert len(meta["sessions"]) >= 3 and meta["sessions"][-1]["status"] == "finished"
    earlier = {s["status"] for s in meta["sessions"][:-1]}
    assert "killed" in earlier and earlier <= {"killed", "finished"}


@pytest.mark.slow
def test_kill9_resume_with_the_real_text_system(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({
        "dataset": {"corpus": "demo", "limit": 1}, "cache": {"enabled": False},  # 6 user turns
        "systems": {"text": {"type": "text", "llm": {"name": "smollm2"}, "params": {"max_tokens": 8}}}}))
    # Two uninterrupted runs. The first pays every first-use cost (the one-time GGUF -> safetensors conversion,
    # ~40 s with an empty model cache; cold page cache and bytecode), which the killed runs never pay again: its
    # start-up would make the kill window so long that the runs finish first. The second is the reference the
    # kill windows are measured on; both must agree (greedy decoding), so a mismatch later is resume's fault.
    warm, ref = tmp_path / "warm", tmp_path / "ref"
    for d in (warm, ref):
        done = subprocess.run(_cmd(cfg, d), env=_env(tmp_path), cwd=REPO, capture_output=True, check=False, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stderr
    _compare(warm, ref, audio=False)
    # Kill windows from the reference run's own timings, so the kills land before the run can finish however
    # fast the machine (or the model: a prefix-cached turn takes ~0.1 s): once during start-up, then twice
    # within one turn of a new record.
    session = json.loads((ref / "run.json").read_text())["sessions"][0]
    recs = read_records(ref / "results" / "text.jsonl")[0]
    startup = min(datetime.fromisoformat(r["started"]) for r in recs) - datetime.fromisoformat(session["started"])
    turn_s = statistics.median(r["runner"]["respond_s"] for r in recs)
    seed = random.randrange(1 << 30)
    print("kill schedule seed", seed, "start-up", startup.total_seconds(), "turn", turn_s)
    kills = [(0, startup.total_seconds()), (1, turn_s), (2, turn_s)]
    out = _kill_resume(cfg, tmp_path, kills, seed, timeout=900, min_kills=2)
    _compare(ref, out, audio=False)
