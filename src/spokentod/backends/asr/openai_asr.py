"""ASR through an OpenAI-compatible /v1/audio/transcriptions (OpenAI, vLLM, faster-whisper servers, `spokentod serve`).

Audio in any format the edge reads is converted once to 16 kHz mono WAV before upload, so the server
never sees stereo or odd rates, and a 2-hour file is refused locally before it costs an upload.
"""

from __future__ import annotations

from typing import Any

from spokentod.audio import MAX_SECONDS, as_waveform, wav_bytes
from spokentod.backends.base import Backend, Timings, Transcript, register
from spokentod.backends.http import WIRE_RATE, OpenAICompatible
from spokentod.errors import AudioError


@register("asr", "openai")
class OpenAIASR(OpenAICompatible, Backend):
    def __init__(self, model: str = "whisper-1", base_url: str = "http://127.0.0.1:8000/v1",
                 language: str | None = None, max_seconds: float = MAX_SECONDS, **kw: Any):
        super().__init__(model, base_url, **kw)
        self.language, self.max_seconds = language, max_seconds

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "language": self.language}

    def transcribe(self, audio: Any, language: str | None = None, rate: int | None = None) -> Transcript:
        w = as_waveform(audio, rate=rate, target_rate=WIRE_RATE, max_seconds=self.max_seconds)
        if len(w.samples) == 0:  # refuse locally: an upload cannot fix it
            raise AudioError("audio is empty")
        form = {"model": self.model, "response_format": "json"}
        if language or self.language:
            form["language"] = language or self.language
        resp = self.http.request("POST", "/audio/transcriptions", data=form,
                                 files={"file": ("audio.wav", wav_bytes(w.samples, w.rate), "audio/wav")})
        data = self.http.decode_json(resp.body)
        if not isinstance(data.get("text"), str):
            raise self.http.error(f"transcription response has no 'text': {str(data)[:120]}")
        wall = resp.wall
        return Transcript(text=data["text"].strip(), language=data.get("language"),
                          timings=Timings(wall=wall, rtf=wall / w.duration if w.duration else None,
                                          extra={"attempts": resp.attempts, "audio_seconds": w.duration}))
