"""MiMo-Audio (Xiaomi, MiMo-Audio-7B-Instruct) for spoken dialogue, where its code is installed.

MiMo-Audio has no PyPI package: its inference code lives in the GitHub repository XiaomiMiMo/MiMo-Audio
(``src/mimo_audio/mimo_audio.py``, class ``MimoAudio(model_path, mimo_audio_tokenizer_path, device)``).
Point ``repo`` at a checkout (or put it on PYTHONPATH); it is imported only when this backend is built, so
spokentod never requires it. Its own requirements (flash-attn, torchaudio with CUDA, …) are the checkout's.

Config: ``{"name": "mimo-audio", "model": <MiMo-Audio-7B-Instruct path>, "tokenizer": <MiMo-Audio-Tokenizer
path>, "repo": <checkout>, "system_prompt": ..., "prompt_speech": <wav path for the assistant's voice>}``.

The upstream multi-turn spoken-dialogue prompt takes user turns as audio and assistant turns as text +
audio, so every history turn must carry audio (in the bench the gold history is TTS-rendered). Generation
uses MiMo's own task samplers (sampled, not greedy; GenParams other than the seed are not applied,
the upstream method does not take them); the text channel and the 24 kHz waveform are returned.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time
from typing import Any

from spokentod.audio import load_audio
from spokentod.backends.audiolm._parts import part_audio, part_text, parts
from spokentod.backends.base import AudioOut, AudioReply, Backend, GenParams, Message, Timings, register
from spokentod.errors import SpokenTODError

MODULES = ("mimo_audio.mimo_audio", "src.mimo_audio.mimo_audio")  # installed package / repository checkout
OUTPUT_RATE = 24000


def import_mimo(repo: str | os.PathLike | None = None) -> Any:
    """The module that defines MimoAudio, or a SpokenTODError that says how to get it."""
    if repo:
        for p in (str(repo), os.path.join(str(repo), "src")):
            if p not in sys.path:
                sys.path.insert(0, p)
    errors = []
    for name in MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise SpokenTODError(
        "the mimo-audio backend needs MiMo-Audio's inference code (package 'mimo_audio', no PyPI release): "
        "git clone https://github.com/XiaomiMiMo/MiMo-Audio, install its requirements, and pass "
        "repo=<checkout> (" + "; ".join(errors) + ")"
    )


def to_message_list(messages: list[Message], rate: int) -> tuple[list[dict[str, Any]], str | None]:
    """OpenAI-shaped messages → (MiMo message_list, system prompt). User turns become waveforms (torch
    tensors at MiMo's tokenizer rate), assistant turns {"text", "audio"}; system text is collected."""
    import torch

    out, system = [], []
    for i, m in enumerate(messages):
        role = m.get("role", "user")
        texts, audios = [], []
        for j, p in enumerate(parts(m)):
            t = part_text(p)
            if t is not None:
                texts.append(t)
            else:
                a = part_audio(p, rate, where=f"message {i} part {j}")
                if a is None:
                    raise ValueError(f"message {i} part {j}: unsupported part type {p.get('type')!r}")
                audios.append(a)
        if role == "system":
            system += texts
            continue
        if len(audios) != 1:
            raise ValueError(
                f"message {i} ({role}): MiMo-Audio needs exactly one audio part per turn, got {len(audios)}"
            )
        wav = torch.from_numpy(audios[0])
        if role == "user":
            out.append({"role": "user", "content": wav})
        elif role == "assistant":
            out.append({"role": "assistant", "content": {"text": " ".join(texts), "audio": wav}})
        else:
            raise ValueError(f"message {i}: unsupported role {role!r}")
    return out, ("\n\n".join(system) or None)


@register("audiolm", "mimo-audio")
class MimoAudioLM(Backend):
    def __init__(
        self,
        model: str | os.PathLike,
        tokenizer: str | os.PathLike,
        repo: str | os.PathLike | None = None,
        device: str | None = None,
        system_prompt: str | None = None,
        prompt_speech: str | os.PathLike | None = None,
    ):
        mod = import_mimo(repo)
        self.model_ref, self.tokenizer_ref = str(model), str(tokenizer)
        self.system_prompt, self.prompt_speech = system_prompt, prompt_speech
        self.mimo = mod.MimoAudio(self.model_ref, self.tokenizer_ref, device=device)
        self.rate = int(self.mimo.mimo_audio_tokenizer.config.sampling_rate)

    def identity(self) -> dict[str, Any]:
        return super().identity() | {
            "model": self.model_ref,
            "tokenizer": self.tokenizer_ref,
            "system_prompt": self.system_prompt,
            "prompt_speech": str(self.prompt_speech) if self.prompt_speech else None,
        }

    def respond(self, messages: list[Message], params: GenParams | None = None) -> AudioReply:
        import torch

        params = params or GenParams()
        t0 = time.perf_counter()
        message_list, system = to_message_list(messages, self.rate)
        system = "\n\n".join(s for s in (self.system_prompt, system) if s) or None
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with tempfile.TemporaryDirectory() as tmp:  # upstream writes the reply waveform to a file
            wav_path = os.path.join(tmp, "reply.wav")
            text = self.mimo.spoken_dialogue_sft_multiturn(
                message_list,
                output_audio_path=wav_path,
                system_prompt=system,
                prompt_speech=str(self.prompt_speech) if self.prompt_speech else None,
            )
            wav = load_audio(wav_path, target_rate=None, allow_empty=True)
        wall = time.perf_counter() - t0
        audio = AudioOut(wav.samples, wav.rate, Timings(wall=wall))
        return AudioReply(
            text=str(text).strip(),
            audio=audio,
            timings=Timings(wall=wall, rtf=wall / audio.duration if audio.duration else None),
        )
