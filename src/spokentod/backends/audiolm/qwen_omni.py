"""Qwen2.5-Omni through transformers: the thinker writes the text reply, the talker + token2wav speak it.

Config: ``{"name": "qwen-omni", "model": "Qwen/Qwen2.5-Omni-7B" (or a local path), "revision": ...,
"speaker": "Chelsie" | "Ethan", "return_audio": true, "dtype": "auto", "device": "auto",
"quantization": null | "4bit" | "8bit", "attn_implementation": null | "sdpa" | "flash_attention_2"}``.

Precision: by default the weights load in the checkpoint's own dtype (``dtype: auto``, bfloat16 for the
released models) and are never quantized. The reference implementation forced 4-bit, which changes the system under test;
here bitsandbytes 4/8-bit is used only when the config asks, and it is then part of identity() so results
and cache entries of a quantized model never mix with full-precision ones.

Audio output needs Qwen's own system prompt (the model card says the talker is trained with it), so a
caller's system text is appended after it rather than replacing it. Every audio part is sent whole up to
30 s; longer audio becomes consecutive 30 s parts, the audio encoder's window.

Loading the released processor needs torchvision (its video processor), even though only text and audio
are sent. Checked on tiny random models: CPU float32 (tests), and CUDA bf16 plus bitsandbytes 4/8-bit with
and without audio output (H100, transformers 5.17).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from spokentod.backends import _hf
from spokentod.backends.audiolm._parts import part_audio, part_text, parts
from spokentod.backends.base import AudioOut, AudioReply, Backend, GenParams, Message, Timings, register

QWEN_SYSTEM = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
    "perceiving auditory and visual inputs, as well as generating text and speech."
)
INPUT_RATE = 16000  # the processor's Whisper feature extractor
OUTPUT_RATE = 24000  # token2wav (BigVGAN) output


def to_conversation(
    messages: list[Message], system_prompt: str | None = QWEN_SYSTEM, rate: int = INPUT_RATE
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """OpenAI-shaped messages → (Qwen processor conversation, audio arrays in prompt order).

    System messages are merged into one leading system turn that starts with `system_prompt`."""
    system_texts = [system_prompt] if system_prompt else []
    conv: list[dict[str, Any]] = []
    audios: list[np.ndarray] = []
    for i, m in enumerate(messages):
        role = m.get("role", "user")
        if role == "system":
            system_texts += [t for p in parts(m) if (t := part_text(p))]
            continue
        content = []
        for j, p in enumerate(parts(m)):
            text = part_text(p)
            if text is not None:
                content.append({"type": "text", "text": text})
                continue
            samples = part_audio(p, rate, where=f"message {i} part {j}")
            if samples is None:
                raise ValueError(f"message {i} part {j}: unsupported part type {p.get('type')!r}")
            for window in _hf.split_windows(samples, rate):
                content.append({"type": "audio", "audio": window})
                audios.append(window)
        conv.append({"role": role, "content": content})
    if system_texts:
        conv.insert(0, {"role": "system", "content": [{"type": "text", "text": "\n\n".join(system_texts)}]})
    return conv, audios


def _quantization_config(quantization: str | None, compute_dtype: Any) -> Any:
    if not quantization:
        return None
    from transformers import BitsAndBytesConfig  # needs the bitsandbytes package and a CUDA GPU

    # Output heads stay in full precision (their logits pick every token), and token2wav must: generate()
    # casts it to float32 before decoding, which quantized layers cannot follow.
    keep = ["lm_head", "codec_head", "token2wav"]
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=keep,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)
    raise ValueError(f"quantization must be null, '4bit' or '8bit', not {quantization!r}")


@register("audiolm", "qwen-omni")
class QwenOmni(Backend):
    def __init__(
        self,
        model: str | os.PathLike = "Qwen/Qwen2.5-Omni-7B",
        revision: str | None = None,
        speaker: str = "Chelsie",
        return_audio: bool = True,
        dtype: str = "auto",
        device: str = "auto",
        quantization: str | None = None,
        attn_implementation: str | None = None,
        system_prompt: str | None = QWEN_SYSTEM,
        talker_max_new_tokens: int = 4096,
        threads: int | None = None,
    ):
        import torch
        from transformers import Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniProcessor

        _hf.set_threads(threads)
        self.model_ref, self.revision = str(model), revision
        self.device = _hf.resolve_device(device)
        self.speaker, self.return_audio, self.quantization = speaker, return_audio, quantization
        self.speaks = bool(return_audio)  # what an e2e system on it declares (systems/e2e.py)
        self.system_prompt, self.talker_max_new_tokens = system_prompt, int(talker_max_new_tokens)
        torch_dtype = _hf.resolve_dtype(dtype)
        kw: dict[str, Any] = {"revision": revision, "dtype": torch_dtype}
        if attn_implementation:
            kw["attn_implementation"] = attn_implementation
        qcfg = _quantization_config(quantization, torch.bfloat16 if torch_dtype == "auto" else torch_dtype)
        if qcfg is not None:  # bitsandbytes places the weights itself
            kw.update(quantization_config=qcfg, device_map={"": self.device})
        self.processor = Qwen2_5OmniProcessor.from_pretrained(self.model_ref, revision=revision)
        self.model = Qwen2_5OmniForConditionalGeneration.from_pretrained(self.model_ref, **kw)
        if qcfg is None:
            self.model.to(self.device)
        self.model.eval()
        if not return_audio:
            # Text only: free the talker and token2wav (~2 GB) and call the thinker directly (the composite
            # generate() touches the talker even in text mode; its text-mode flag changed across versions).
            self.model.disable_talker()
        elif speaker not in self.model.speaker_map:
            raise ValueError(f"unknown speaker {speaker!r}; this model has {sorted(self.model.speaker_map)}")

    def identity(self) -> dict[str, Any]:
        ident = super().identity() | _hf.model_identity(self.model_ref, self.revision, self.model)
        ident.update(
            dtype=_hf.dtype_name(self.model),
            device=self.device,
            quantization=self.quantization,
            speaker=self.speaker if self.return_audio else None,
            return_audio=self.return_audio,
            system_prompt=self.system_prompt,
            talker_max_new_tokens=self.talker_max_new_tokens,
        )
        return ident

    def _generate(self, inputs: dict[str, Any], params: GenParams) -> tuple[Any, Any]:
        """(token ids incl. prompt, waveform tensor or None)."""
        thinker: dict[str, Any] = {"max_new_tokens": params.max_tokens}
        if params.temperature and params.temperature > 0:
            thinker.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:  # greedy text; the talker still samples (its defaults), seeded in respond()
            thinker.update(do_sample=False)
        if not self.return_audio:
            return self.model.thinker.generate(**inputs, use_audio_in_video=False, **thinker), None
        ids, wav = self.model.generate(
            **inputs,
            speaker=self.speaker,
            use_audio_in_video=False,
            talker_max_new_tokens=self.talker_max_new_tokens,
            **{f"thinker_{k}": v for k, v in thinker.items()},
        )
        return ids, wav

    def respond(self, messages: list[Message], params: GenParams | None = None) -> AudioReply:
        import torch

        params = params or GenParams()
        t0 = time.perf_counter()
        conv, audios = to_conversation(messages, self.system_prompt)
        prompt = self.processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=prompt, audio=audios or None, return_tensors="pt", padding=True)
        inputs = {
            k: (v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in inputs.items()
            if torch.is_tensor(v)
        }
        if params.seed is not None:  # the talker samples (and token2wav starts from noise): seed both
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            ids, wav = self._generate(inputs, params)
        ids = getattr(ids, "sequences", ids)
        n_prompt = inputs["input_ids"].shape[1]
        text = self.processor.batch_decode(
            ids[:, n_prompt:], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )[0].strip()
        wall = time.perf_counter() - t0
        audio = None
        extra = {"tokens": float(ids.shape[1] - n_prompt), "prompt_tokens": float(n_prompt)}
        if wav is not None:
            samples = wav.reshape(-1).float().cpu().numpy().astype(np.float32)
            audio = AudioOut(samples, OUTPUT_RATE, Timings(wall=wall))
            extra["audio_s"] = audio.duration
        rtf = wall / audio.duration if audio is not None and audio.duration else None
        return AudioReply(text=text, audio=audio, timings=Timings(wall=wall, rtf=rtf, extra=extra))
