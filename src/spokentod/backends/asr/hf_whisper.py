"""Whisper through transformers (any size; local path or hub id, e.g. openai/whisper-large-v3).

Config: ``{"name": "hf-whisper", "model": ..., "revision": ..., "dtype": "float32|float16|bfloat16",
"device": "cpu|cuda|auto", "language": "en", "task": "transcribe", "batch_size": 8, "threads": N}``.
Audio is converted at the edge (any rate/channels → 16 kHz mono). Whisper sees 30 s at a time, so longer
audio is cut into windows of at most 30 s — at the quietest 50 ms in the last 5 s of each window, so a cut
rarely lands inside a word — decoded as one batch and joined. Language and task are passed only to
multilingual checkpoints (English-only ``*.en`` models reject them).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from spokentod.audio import as_waveform, is_silent
from spokentod.backends import _hf
from spokentod.backends._hf import split_windows
from spokentod.backends.base import Backend, Timings, Transcript, register
from spokentod.errors import AudioError


@register("asr", "hf-whisper")
class HFWhisper(Backend):
    def __init__(
        self,
        model: str | os.PathLike = "openai/whisper-large-v3",
        revision: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        language: str | None = None,
        task: str = "transcribe",
        batch_size: int = 8,
        num_beams: int = 1,
        threads: int | None = None,
    ):
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        _hf.set_threads(threads)
        self.model_ref, self.revision = str(model), revision
        self.device = _hf.resolve_device(device)
        self.language, self.task = language, task
        self.batch_size, self.num_beams = max(1, int(batch_size)), int(num_beams)
        self.processor = AutoProcessor.from_pretrained(self.model_ref, revision=revision)
        self.model = WhisperForConditionalGeneration.from_pretrained(
            self.model_ref, revision=revision, dtype=_hf.resolve_dtype(dtype)
        )
        self.model.to(self.device).eval()
        self.rate = int(self.processor.feature_extractor.sampling_rate)
        gc = self.model.generation_config
        self.multilingual = bool(getattr(gc, "is_multilingual", False) and getattr(gc, "lang_to_id", None))
        # Leave room for the forced prefix (<|sot|><|lang|><|task|><|notimestamps|>) in the decoder's limit.
        self.max_new_tokens = int(self.model.config.max_target_positions) - 8

    def identity(self) -> dict[str, Any]:
        ident = super().identity() | _hf.model_identity(self.model_ref, self.revision, self.model)
        ident.update(
            dtype=_hf.dtype_name(self.model),
            device=self.device,
            task=self.task,
            language=self.language,
            num_beams=self.num_beams,
        )
        return ident

    def _generate_kwargs(self, language: str | None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": False,
        }
        if self.multilingual:
            kw["task"] = self.task
            if language:
                kw["language"] = language  # None: Whisper detects the language per window
        return kw

    def transcribe(self, audio: Any, language: str | None = None, rate: int | None = None) -> Transcript:
        import torch

        t0 = time.perf_counter()
        wav = as_waveform(audio, rate=rate, target_rate=self.rate)
        if len(wav.samples) == 0:
            raise AudioError("audio is empty: nothing to transcribe")
        if is_silent(wav.samples):
            raise AudioError("audio is silent (RMS below 1e-4): nothing to transcribe")
        language = language or self.language
        windows = split_windows(wav.samples, self.rate)
        texts: list[str] = []
        for i in range(0, len(windows), self.batch_size):
            batch = windows[i : i + self.batch_size]
            feats = self.processor.feature_extractor(batch, sampling_rate=self.rate, return_tensors="pt")
            inputs = feats.input_features.to(self.device, self.model.dtype)
            with torch.inference_mode():
                ids = self.model.generate(inputs, **self._generate_kwargs(language))
            texts += self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        wall = time.perf_counter() - t0
        text = " ".join(t.strip() for t in texts if t.strip())
        bounds = np.cumsum([0] + [len(w) for w in windows]) / self.rate
        segments = [
            {"start": float(bounds[k]), "end": float(bounds[k + 1]), "text": t.strip()}
            for k, t in enumerate(texts)
        ]
        return Transcript(
            text=text,
            language=language or (None if self.multilingual else "en"),
            segments=segments,
            timings=Timings(
                wall=wall,
                rtf=wall / wav.duration,
                extra={"audio_s": wav.duration, "windows": float(len(windows))},
            ),
        )
