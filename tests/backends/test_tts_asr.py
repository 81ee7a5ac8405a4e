"""Embedded speech backends: Kokoro and espeak-ng TTS, Whisper tiny.en ASR (CTranslate2), offline.

WER uses spokentod.metrics.text.normalize_for_wer (Whisper's English normalizer: lower case, no
punctuation, numbers as digits) on both sides.
"""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from spokentod.audio import wav_bytes, write_wav
from spokentod.backends.base import create
from spokentod.backends.tts._common import TTSError
from spokentod.errors import AudioError, SpokenTODError
from spokentod.metrics.text import normalize_for_wer

SENTENCES = [
    "Could you book a table for four people on Friday evening?",
    "I need a cheap hotel in the north of town with free parking.",
]


@pytest.fixture(scope="module")
def asr():
    return create("asr", {"name": "whisper-ct2"})


@pytest.fixture(scope="module")
def kokoro():
    return create("tts", {"name": "kokoro"})


@pytest.fixture(scope="module")
def espeak():
    return create("tts", "espeak")


def _wer(tts, asr, voice=None, sentences=SENTENCES) -> float:
    refs, hyps = [], []
    for s in sentences:
        out = tts.synthesize(s, voice=voice)
        refs.append(normalize_for_wer(s))
        hyps.append(normalize_for_wer(asr.transcribe(out).text))
    return jiwer.wer(refs, hyps)


def test_kokoro_roundtrip(kokoro, asr):
    assert _wer(kokoro, asr) <= 0.10


def test_espeak_roundtrip(espeak, asr):
    # espeak-ng is robotic: tiny.en WER 8-19 % per voice (espeak.py); this checks it is intelligible
    extra = "Hi, I'm looking for a cheap Italian restaurant in the city centre."
    assert _wer(espeak, asr, sentences=[*SENTENCES, extra]) <= 0.25


def test_kokoro_output(kokoro):
    out = kokoro.synthesize(SENTENCES[0], voice="jm_kumo")
    assert out.rate == 24000 and out.samples.dtype == np.float32 and out.samples.ndim == 1
    assert 1.5 < out.duration < 6 and 0 < np.abs(out.samples).max() <= 1.5
    assert out.timings.wall > 0 and out.timings.rtf == pytest.approx(out.timings.wall / out.duration)
    fast = create("tts", {"name": "kokoro", "speed": 1.5}).synthesize(SENTENCES[0], voice="jm_kumo")
    assert fast.duration < 0.85 * out.duration


def test_espeak_output_and_determinism(espeak):
    a = espeak.synthesize(SENTENCES[0], voice="en-gb+f4")
    b = espeak.synthesize(SENTENCES[0], voice="en-gb+f4")
    assert a.rate == 22050 and 1.5 < a.duration < 6
    assert np.array_equal(a.samples, b.samples)


def test_kokoro_voices_and_chunks(kokoro):
    assert kokoro.voices == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    long = " ".join(
        ["We would like a quiet room with a view of the garden, two single beds and breakfast."] * 12
    )
    chunks = kokoro.chunks(long)
    assert len(chunks) > 1 and all(0 < len(c) <= 510 for c in chunks)
    assert all(c.endswith(".") for c in chunks)  # cut at sentence boundaries
    assert not kokoro.unknown(kokoro.phonemize("The quick brown fox jumps over the lazy dog, doesn't it?"))


@pytest.mark.parametrize("text", ["", "   ", "?!", None])
def test_empty_text_is_a_typed_error(kokoro, espeak, text):
    for tts in (kokoro, espeak):
        with pytest.raises(TTSError):
            tts.synthesize(text)


def test_unknown_voice(kokoro, espeak):
    with pytest.raises(SpokenTODError, match="unknown Kokoro voice"):
        kokoro.synthesize("Hello.", voice="af_bella")
    with pytest.raises(SpokenTODError, match="unknown espeak-ng voice"):
        espeak.synthesize("Hello.", voice="xx-nope")


def test_identity_stable(kokoro, espeak, asr):
    again = create("tts", {"name": "kokoro"})
    assert again.identity() == kokoro.identity() and again.identity_hash() == kokoro.identity_hash()
    ident = kokoro.identity()
    assert len(ident["model_sha256"]) == 64 and ident["voices"] == kokoro.voices and ident["vocab_sha256"]
    assert create("tts", {"name": "kokoro", "speed": 1.2}).identity_hash() != kokoro.identity_hash()
    assert create("tts", {"name": "kokoro", "threads": 1}).identity_hash() == kokoro.identity_hash()
    assert create("tts", "espeak").identity_hash() == espeak.identity_hash()
    a = create("asr", {"name": "whisper-ct2"})
    assert a.identity_hash() == asr.identity_hash() and asr.identity()["model"] == "tiny.en"
    assert create("asr", {"name": "whisper-ct2", "beam_size": 5}).identity_hash() != asr.identity_hash()


def test_asr_inputs(espeak, asr, tmp_path):
    out = espeak.synthesize(SENTENCES[0])
    path = tmp_path / "x.wav"
    write_wav(path, out.samples, out.rate)
    texts = [
        asr.transcribe(out).text,
        asr.transcribe(path).text,
        asr.transcribe(str(path)).text,
        asr.transcribe(wav_bytes(out.samples, out.rate)).text,
        asr.transcribe(out.samples, rate=out.rate).text,
    ]
    assert texts[0] and all(normalize_for_wer(t) == normalize_for_wer(texts[0]) for t in texts)
    tr = asr.transcribe(out)
    assert tr.language == "en" and tr.segments and tr.timings.rtf and tr.timings.rtf < 2
    with pytest.raises(AudioError):
        asr.transcribe(out.samples)  # an array needs its rate
    with pytest.raises(SpokenTODError, match="English-only"):
        asr.transcribe(out, language="de")


def test_asr_silence_empty_and_too_long(asr, tmp_path):
    assert asr.transcribe(np.zeros(16000, np.float32), rate=16000).text == ""
    assert asr.transcribe(np.zeros(0, np.float32), rate=16000).text == ""
    assert asr.transcribe(wav_bytes(np.zeros(0, np.float32), 16000)).text == ""
    short = create("asr", {"name": "whisper-ct2", "max_seconds": 5})
    with pytest.raises(AudioError, match="limit"):
        short.transcribe(np.zeros(16000 * 6, np.float32), rate=16000)
    with pytest.raises(AudioError):
        asr.transcribe(b"not audio at all")
