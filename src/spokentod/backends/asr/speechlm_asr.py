"""The speech adapter as an ASR backend: the frozen LLM asked to transcribe through the adapter's learned ASR
prompt, which is how the adapter's WER is measured anywhere in the toolkit (bench --asr, serve, dst).

Config: ``{"name": "speechlm-asr", "adapter": null (the shipped weights) | a directory, "reader": "llm" |
"ctc", "max_new_tokens": 64, "threads": null}``. ``reader: ctc`` reads the adapter's CTC head instead (no
LLM: faster, and on the shipped adapter more accurate; see reports/speech_adapter.md). English only.
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

from spokentod.audio import as_waveform, is_silent, load_audio
from spokentod.backends import _hf
from spokentod.backends.asr.whisper_ct2 import ASRError
from spokentod.backends.base import Backend, Timings, Transcript, register

RATE = 16000


@register("asr", "speechlm-asr")
class SpeechLMASR(Backend):
    def __init__(self, adapter: str | os.PathLike | None = None, reader: Literal["llm", "ctc"] = "llm",
                 max_new_tokens: int = 64, threads: int | None = None):
        from spokentod.backends.audiolm.speechlm import Loaded  # torch + transformers: only when built

        if reader not in ("llm", "ctc"):
            raise ASRError(f"speechlm-asr reader must be 'llm' or 'ctc', not {reader!r}")
        _hf.set_threads(threads)
        self.adapter = Loaded(adapter)
        self.model, self.encoder = self.adapter.model, self.adapter.encoder
        self.reader, self.max_new_tokens = reader, int(max_new_tokens)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), **self.adapter.identity(), "reader": self.reader,
                "max_new_tokens": self.max_new_tokens}

    def transcribe(self, audio: Any, language: str | None = None, rate: int | None = None) -> Transcript:
        if language not in (None, "en"):
            raise ASRError(f"speechlm-asr is English-only; got language={language!r}")
        t0 = time.perf_counter()
        if isinstance(audio, (str, os.PathLike, bytes, bytearray)):
            wav = load_audio(audio, RATE, allow_empty=True)
        else:
            wav = as_waveform(audio, rate=rate, target_rate=RATE)
        timings = Timings(extra={"audio_seconds": wav.duration})
        if is_silent(wav.samples):
            timings.wall = time.perf_counter() - t0
            return Transcript("", timings, language="en")
        feats = self.encoder.encode([wav.samples])
        if self.reader == "ctc":
            text = self.model.ctc_transcribe(feats)[0]
        else:
            text = self.model.transcribe(feats, self.max_new_tokens)[0]
        timings.wall = time.perf_counter() - t0
        timings.rtf = timings.wall / wav.duration if wav.duration else None
        return Transcript(text, timings, language="en")
