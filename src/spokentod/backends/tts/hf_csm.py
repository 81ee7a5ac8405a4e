"""Sesame CSM-1B through transformers (the TTS of the reference paper's cascade), 24 kHz output.

Config: ``{"name": "hf-csm", "model": "sesame/csm-1b" (or a local path), "revision": ..., "speaker": 0,
"reference_text": ..., "reference_audio": <path>, "dtype": "float32", "device": "auto", "max_audio_s": 30,
"do_sample": null, "seed": 0}``.

CSM picks a voice per speaker id only loosely: without context the same id can sound different from one
sentence to the next, which the bench's voice-consistency metric would punish. Giving a reference
utterance (its text and audio) as context keeps one voice across a dialogue; the prompt then has the form
``<bos>[spk]ref text<eos><|AUDIO|><|audio_eos|><bos>[spk]new text<eos>`` with the reference audio passed
alongside, as in transformers' CSM integration tests. Sampling follows the checkpoint's generation config
unless do_sample is set; the seed is fixed per call so a given text renders the same way every time.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from spokentod.audio import as_waveform
from spokentod.backends import _hf
from spokentod.backends.base import AudioOut, Backend, Timings, register

RATE = 24000  # Mimi codec


def csm_prompt(
    text: str,
    speaker: str | int,
    bos: str,
    eos: str,
    audio_token: str,
    audio_eos: str,
    context: list[tuple[str | int, str]] = (),
) -> str:
    """Context turns (speaker, text) each followed by their audio placeholder, then the turn to speak."""
    ctx = "".join(f"{bos}[{s}]{t}{eos}{audio_token}{audio_eos}" for s, t in context)
    return f"{ctx}{bos}[{speaker}]{text}{eos}"


@register("tts", "hf-csm")
class HFCsm(Backend):
    def __init__(
        self,
        model: str | os.PathLike = "sesame/csm-1b",
        revision: str | None = None,
        speaker: str | int = 0,
        reference_text: str | None = None,
        reference_audio: str | os.PathLike | None = None,
        dtype: str = "float32",
        device: str = "auto",
        max_audio_s: float = 30.0,
        do_sample: bool | None = None,
        seed: int | None = 0,
        threads: int | None = None,
    ):
        from transformers import AutoProcessor, CsmForConditionalGeneration

        if (reference_text is None) != (reference_audio is None):
            raise ValueError("give both reference_text and reference_audio, or neither")
        _hf.set_threads(threads)
        self.model_ref, self.revision = str(model), revision
        self.device = _hf.resolve_device(device)
        self.speaker, self.do_sample, self.seed = speaker, do_sample, seed
        self.processor = AutoProcessor.from_pretrained(self.model_ref, revision=revision)
        self.model = CsmForConditionalGeneration.from_pretrained(
            self.model_ref, revision=revision, dtype=_hf.resolve_dtype(dtype)
        )
        self.model.to(self.device).eval()
        frame_rate = float(getattr(self.model.config.codec_config, "frame_rate", 12.5))
        self.max_new_tokens = max(1, int(max_audio_s * frame_rate))
        self.reference_text, self.reference_path = reference_text, reference_audio
        self.reference = (
            as_waveform(reference_audio, target_rate=RATE).samples if reference_audio is not None else None
        )

    def identity(self) -> dict[str, Any]:
        ident = super().identity() | _hf.model_identity(self.model_ref, self.revision, self.model)
        ref = None
        if self.reference is not None:  # the reference voice changes every output: key it by content
            import hashlib

            ref = {
                "text": self.reference_text,
                "audio_sha256": hashlib.sha256(self.reference.tobytes()).hexdigest()[:16],
            }
        ident.update(
            dtype=_hf.dtype_name(self.model),
            device=self.device,
            speaker=str(self.speaker),
            reference=ref,
            do_sample=self.do_sample,
            seed=self.seed,
            max_new_tokens=self.max_new_tokens,
        )
        return ident

    def _inputs(self, text: str, speaker: str | int) -> dict[str, Any]:
        tok = self.processor.tokenizer
        audio_token = getattr(self.processor, "audio_token", "<|AUDIO|>")
        audio_eos = getattr(self.processor, "audio_eos_token", "<|audio_eos|>")
        context = [(speaker, self.reference_text)] if self.reference is not None else []
        prompt = csm_prompt(text, speaker, tok.bos_token, tok.eos_token, audio_token, audio_eos, context)
        kw: dict[str, Any] = {"text": prompt, "return_tensors": "pt"}
        if self.reference is not None:
            kw["audio"] = [self.reference]
        inputs = self.processor(**kw)
        return {
            k: (v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in inputs.items()
        }

    def synthesize(self, text: str, voice: str | int | None = None) -> AudioOut:
        import torch

        if not text or not text.strip():
            raise ValueError("nothing to synthesize: text is empty")
        t0 = time.perf_counter()
        inputs = self._inputs(text.strip(), self.speaker if voice is None else voice)
        gen: dict[str, Any] = {"output_audio": True, "max_new_tokens": self.max_new_tokens}
        if self.do_sample is not None:
            gen.update(do_sample=self.do_sample, depth_decoder_do_sample=self.do_sample)
        if self.seed is not None:
            torch.manual_seed(self.seed)
        with torch.inference_mode():
            audio = self.model.generate(**inputs, **gen)
        samples = audio[0].reshape(-1).float().cpu().numpy().astype(np.float32)
        wall = time.perf_counter() - t0
        duration = len(samples) / RATE
        return AudioOut(
            samples,
            RATE,
            Timings(wall=wall, rtf=wall / duration if duration else None, extra={"audio_s": duration}),
        )
