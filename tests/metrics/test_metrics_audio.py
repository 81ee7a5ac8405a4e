"""Audio metrics on real speech from the embedded Kokoro TTS (two voices), heard by Whisper tiny.en.

TTS calls go through the persistent backend cache (~/.cache/spokentod), so only the first run on a
machine pays for synthesis.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from spokentod.audio import load_audio, write_wav
from spokentod.metrics import audio as A
from spokentod.metrics.latency import _latency
from spokentod.metrics.registry import Missing, ScoredReply
from spokentod.rundir.records import ResultRecord

pytestmark = pytest.mark.slow

SENTENCES = ("I can help you find a restaurant. Which city should I look in?",
             "That sounds exhausting. Do you get a few days off now to recover?",
             "Great, I found three Italian places in San Jose with moderate prices.")


@lru_cache(maxsize=1)
def _tts():
    from spokentod.backends.base import create
    from spokentod.backends.cache import Cache, cached

    return cached(create("tts", {"name": "kokoro"}), Cache())


def speak(text: str, voice: str, path: Path) -> Path:
    """Real Kokoro speech written as a 24 kHz WAV (what a cascade system writes)."""
    out = _tts().synthesize(text, voice)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, out.samples, out.rate)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {f"{v}_{i}": speak(s, v, d / f"{v}_{i}.wav") for v in ("jf_alpha", "jm_kumo")
            for i, s in enumerate(SENTENCES)}


def _reply(path: Path | None, text: str = "", prior: list[Path] | None = None, **rec) -> ScoredReply:
    record = ResultRecord(**{"system": "s", "dialogue_id": "d", "turn": 0, "text": text,
                             "audio_path": str(path) if path else None, **rec}).to_json()
    return ScoredReply(record, Path("/"), spoken=True, prior_audio=prior or [])


def test_dnsmos_falls_when_noise_is_added(clips, tmp_path):
    clean = load_audio(clips["jf_alpha_0"]).samples
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(len(clean)).astype(np.float32)
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2)) / 10 ** (5 / 20)  # 5 dB SNR
    write_wav(tmp_path / "noisy.wav", clean + noise, 16000)
    a = A._dnsmos_metric(_reply(clips["jf_alpha_0"]), None).values
    b = A._dnsmos_metric(_reply(tmp_path / "noisy.wav"), None).values
    assert 2.5 < a["dnsmos_ovrl"] <= 5 and set(a) == {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"}
    assert b["dnsmos_ovrl"] < a["dnsmos_ovrl"] - 0.5, (a, b)
    assert b["dnsmos_bak"] < a["dnsmos_bak"] - 0.5, (a, b)


def test_wer_rises_when_text_and_audio_disagree(clips):
    from spokentod.backends.base import create

    heard = create("asr", {"name": "whisper-ct2"}).transcribe(str(clips["jf_alpha_0"])).text
    same = _reply(clips["jf_alpha_0"], SENTENCES[0])
    same.transcript = heard
    other = _reply(clips["jf_alpha_0"], SENTENCES[2])  # the text says one thing, the audio another
    other.transcript = heard
    w_same = A._intelligibility(same, None).values
    w_other = A._intelligibility(other, None).values
    assert w_same["wer"] <= 0.2, heard
    assert w_other["wer"] > 0.6 and w_other["cer"] > w_same["cer"] + 0.3, (heard, w_other)


def test_voice_similarity_higher_within_one_voice_than_across_two(clips):
    cur = clips["jf_alpha_2"]
    within = A._voice_sim(_reply(cur, prior=[clips["jf_alpha_0"], clips["jf_alpha_1"]]), None).values["voice_sim"]
    across = A._voice_sim(_reply(cur, prior=[clips["jm_kumo_0"], clips["jm_kumo_1"]]), None).values["voice_sim"]
    assert within > across + 0.1, (A.describe_voice_model(), within, across)


def test_bad_audio_is_missing_with_its_reason(clips, tmp_path):
    write_wav(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not a wav")
    for path, reason in ((tmp_path / "silent.wav", "silent audio"), (tmp_path / "nope.wav", "not found"),
                         (tmp_path / "broken.wav", "unreadable"), (None, "no reply audio")):
        with pytest.raises(Missing, match=reason):
            A._dnsmos_metric(_reply(path), None)
    with pytest.raises(Missing, match="no earlier spoken reply"):
        A._voice_sim(_reply(clips["jf_alpha_0"]), None)
    loud = load_audio(clips["jf_alpha_0"]).samples * 8  # clipped
    write_wav(tmp_path / "clipped.wav", loud, 16000)
    assert A._duration(_reply(tmp_path / "clipped.wav", "a b c"), None).values["clip_frac"] > 0.01


def test_latency_from_timings_and_missing_stages():
    cascade = _latency(_reply(None, timings={"asr": 0.5, "llm": 1.2, "ttft": 0.7, "tts": 2.0, "first_audio": 2.9,
                                             "total": 3.8}, audio_seconds=4.0), None)
    assert cascade.values["lat_tts"] == 2.0 and cascade.values["rtf_tts"] == 0.5 and not cascade.missing
    text = _latency(_reply(None, timings={"llm": 1.0, "ttft": 0.2, "total": 1.1}), None)
    assert text.values["lat_tts"] is None and "tts" in text.missing["lat_tts"]
    assert text.values["rtf_tts"] is None and set(text.missing) == {"lat_asr", "lat_tts", "lat_first_audio", "rtf_tts"}


def test_other_mos_predictors_plug_in_as_metric_groups(clips, monkeypatch):
    from spokentod.metrics import registry

    toy = A.mos_metric("toy_mos", lambda x: 1.0 + 4.0 * float(np.mean(np.abs(x)) > 0.001))  # a stand-in predictor
    monkeypatch.setitem(registry._METRICS, "toy_mos", toy)  # what an entry point of `spokentod.metrics` does
    assert registry.resolve("toy_mos") == [toy] and registry.resolve(["toy_mos", "wer"])[1].name == "intelligibility"
    assert toy.compute(_reply(clips["jf_alpha_0"]), None).values == {"toy_mos": 5.0}
    with pytest.raises(KeyError, match="unknown metric"):
        registry.resolve("no_such_metric")
