"""TTS through an OpenAI-compatible /v1/audio/speech (OpenAI, vLLM, Kokoro-FastAPI, `spokentod serve`).

Asks for WAV and measures time to first byte, the latency a listener waits before audio can start.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from spokentod.audio import load_audio
from spokentod.backends.base import AudioOut, Backend, Timings, register
from spokentod.backends.http import OpenAICompatible, check_text
from spokentod.errors import AudioError


def decode_wav(body: bytes) -> tuple[np.ndarray, int]:
    """WAV bytes → float32 mono. Streaming servers (OpenAI among them) write placeholder chunk sizes
    (0 or 0xFFFFFFFF) because they send the header before knowing the length; libsndfile rejects some of
    those, so 16-bit PCM is also read by hand, taking the data chunk to the end of the body."""
    try:
        w = load_audio(body, target_rate=None, allow_empty=True)
        return w.samples, w.rate
    except AudioError:
        if body[:4] != b"RIFF" or body[8:12] != b"WAVE":
            raise
    pos, rate, channels, bits = 12, 0, 1, 0
    while pos + 8 <= len(body):
        cid, size = body[pos:pos + 4], struct.unpack("<I", body[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            _fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[pos + 8:pos + 24])
        elif cid == b"data":
            if not rate or bits != 16:
                break
            pcm = body[pos + 8:]
            pcm = pcm[: len(pcm) - len(pcm) % (2 * channels)]
            x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
            return x.reshape(-1, channels).mean(axis=1), rate
        pos += 8 + size + (size & 1)
    raise AudioError("speech response: WAV that is neither readable nor 16-bit PCM")


@register("tts", "openai")
class OpenAITTS(OpenAICompatible, Backend):
    def __init__(self, model: str = "tts-1", base_url: str = "http://127.0.0.1:8000/v1", voice: str = "alloy",
                 speed: float | None = None, **kw: Any):
        super().__init__(model, base_url, **kw)
        self.voice, self.speed = voice, speed

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "voice": self.voice, "speed": self.speed}

    def synthesize(self, text: str, voice: str | None = None) -> AudioOut:
        text = check_text(text, "text", self.http.error)
        if not text.strip():
            raise self.http.error("text to synthesize is empty")
        body = {"model": self.model, "input": text, "voice": voice or self.voice, "response_format": "wav"}
        if self.speed is not None:
            body["speed"] = self.speed
        resp = self.http.request("POST", "/audio/speech", json=body)
        try:
            samples, rate = decode_wav(resp.body)
        except AudioError as e:
            ctype = resp.headers.get("content-type", "?")
            raise self.http.error(f"speech response is not WAV audio (content-type {ctype}): {e}") from None
        dur = len(samples) / rate if rate else 0.0
        return AudioOut(samples=samples, rate=rate,
                        timings=Timings(wall=resp.wall, first=resp.first_byte, rtf=resp.wall / dur if dur else None,
                                        extra={"attempts": resp.attempts}))
