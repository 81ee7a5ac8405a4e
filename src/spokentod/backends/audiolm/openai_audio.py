"""Audio LM through OpenAI-compatible audio chat: `input_audio` parts in, text + audio out.

As served by vLLM for Qwen2.5-Omni, by OpenAI's audio models (gpt-4o-audio-preview) and by
`spokentod serve` (a cascade or a configured audio LM). Messages may carry in-process audio parts
(``{"type": "audio", "samples": ..., "rate": ...}``); they are sent as base64 16 kHz mono WAV.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from spokentod.backends.base import AudioOut, AudioReply, Backend, GenParams, Message, Timings, register
from spokentod.backends.http import OpenAICompatible, response_format, wire_messages
from spokentod.backends.tts.openai_tts import decode_wav
from spokentod.errors import AudioError


@register("audiolm", "openai")
class OpenAIAudioLM(OpenAICompatible, Backend):
    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", voice: str | None = "alloy",
                 audio_out: bool = True, extra_body: dict | None = None, **kw: Any):
        """`audio_out=False` asks for text only (modalities ["text"]); `voice` is the server's speaker name."""
        super().__init__(model, base_url, **kw)
        self.voice, self.audio_out, self.extra_body = voice, audio_out, dict(extra_body or {})
        self.speaks = bool(audio_out)  # what an e2e system on it declares (systems/e2e.py)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "voice": self.voice, "audio_out": self.audio_out, "extra_body": self.extra_body}

    def respond(self, messages: list[Message], params: GenParams | None = None) -> AudioReply:
        p = params or GenParams()
        body: dict[str, Any] = {"model": self.model, "messages": wire_messages(messages, self.http.error),
                                "max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p,
                                "modalities": ["text", "audio"] if self.audio_out else ["text"], **self.extra_body}
        if self.audio_out:
            body["audio"] = {"voice": self.voice, "format": "wav"}
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        if p.json_schema is not None and "response_format" not in body:
            body["response_format"] = response_format(p.json_schema)
        data, resp = self.http.post_json("/chat/completions", body)
        try:
            msg = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise self.http.error(f"response has no choices[0].message: {str(data)[:120]}",
                                  cause="bad response") from None
        audio_part = msg.get("audio") or {}
        text = msg.get("content") or audio_part.get("transcript") or ""
        audio = None
        if audio_part.get("data"):
            try:
                samples, rate = decode_wav(base64.b64decode(audio_part["data"], validate=True))
            except (binascii.Error, ValueError, AudioError) as e:
                raise self.http.error(f"message.audio.data is not base64 WAV: {e}") from None
            dur = len(samples) / rate if rate else 0.0
            audio = AudioOut(samples, rate, Timings(wall=resp.wall, rtf=resp.wall / dur if dur else None))
        elif self.audio_out:
            raise self.http.error("audio was requested but the response has no message.audio.data")
        return AudioReply(text=text, audio=audio,
                     timings=Timings(wall=resp.wall, first=resp.first_byte,
                                     extra={"attempts": resp.attempts, "transcript_only": float(not msg.get("content"))}))
