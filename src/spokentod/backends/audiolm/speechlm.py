"""Embedded end-to-end speech LM: the trained speech adapter in front of the frozen SmolLM2-135M-Instruct.

Config: ``{"name": "speechlm", "adapter": null (the weights shipped in the package) | a directory with
adapter.safetensors + adapter.json, "threads": null}``.

The LLM is the cascade's own (the same converted SmolLM2 weights, untouched), so a cascade (Whisper → this
LLM) and this system differ only in how the user's speech reaches the LLM: a transcript, or the adapter's
speech vectors. The prompt is the LLM's chat template applied to the messages with each audio part
replaced by a marker; the marker's place then receives the adapter's vectors, so the formatting around
them (default system prompt, turn tags) is exactly what the text path gets. It answers in text only.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import torch

from spokentod.backends import _hf
from spokentod.backends.audiolm._parts import part_audio, part_text, parts
from spokentod.backends.base import AudioReply, Backend, GenParams, Message, Timings, register

RATE = 16000
MARKER = "\u2063SPEECH\u2063"  # invisible separators: no chat text contains it


def embedded_adapter() -> Path:
    """The adapter weights shipped in the package (see spokentod/adapter/embedded/adapter.json)."""
    return Path(__file__).resolve().parents[2] / "adapter" / "embedded"


def to_marked(messages: list[Message]) -> tuple[list[dict[str, str]], list[Any]]:
    """OpenAI-shaped messages → (plain-text chat with a MARKER per audio part, the audio arrays in order)."""
    conv: list[dict[str, str]] = []
    audios: list[Any] = []
    for i, m in enumerate(messages):
        texts = []
        for j, p in enumerate(parts(m)):
            text = part_text(p)
            if text is not None:
                texts.append(text)
                continue
            samples = part_audio(p, RATE, where=f"message {i} part {j}")
            if samples is None:
                raise ValueError(f"message {i} part {j}: unsupported part type {p.get('type')!r}")
            texts.append(MARKER)
            audios.append(samples)
        conv.append({"role": m.get("role", "user"), "content": " ".join(texts)})
    return conv, audios


@register("audiolm", "speechlm")
class SpeechLM(Backend):
    speaks = False  # text out only: an e2e system on it is scored on its reply text
    def __init__(self, adapter: str | os.PathLike | None = None, threads: int | None = None):
        from spokentod.adapter.model import SpeechAdapter  # torch + transformers: only when built
        from spokentod.dst.model.encoders import build_encoder

        _hf.set_threads(threads)
        self.path = Path(adapter) if adapter else embedded_adapter()
        self.model = SpeechAdapter.load(self.path)
        self.encoder = build_encoder(self.model.cfg.encoder)
        self.sha256 = hashlib.sha256((self.path / "adapter.safetensors").read_bytes()).hexdigest()
        tok = self.model.tokenizer
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>")

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "adapter_sha256": self.sha256, "llm": self.model.cfg.llm,
                "encoder": self.encoder.identity(), "compress": self.model.cfg.compress}

    def prompt_embeddings(self, messages: list[Message]) -> torch.Tensor:
        """[L, H] input embeddings of the chat, the adapter's vectors where the audio parts were."""
        conv, audios = to_marked(messages)
        m = self.model
        text = m.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        pieces = text.split(MARKER)
        speech = m.speech_inputs(self.encoder.encode(audios)) if audios else []
        out = []
        for k, piece in enumerate(pieces):
            if piece:
                out.append(m.embed(m._ids(piece)))
            if k < len(speech):
                out.append(speech[k])
        return torch.cat(out)

    @torch.no_grad()
    def respond(self, messages: list[Message], params: GenParams | None = None) -> AudioReply:
        p = params or GenParams()
        t0 = time.perf_counter()
        emb = self.prompt_embeddings(messages)
        sample = p.temperature > 0
        if p.seed is not None:
            torch.manual_seed(p.seed)
        kw = {"do_sample": True, "temperature": p.temperature, "top_p": p.top_p} if sample else {"do_sample": False}
        out = self.model.llm.generate(inputs_embeds=emb[None], attention_mask=torch.ones(1, len(emb), dtype=torch.long),
                                      max_new_tokens=p.max_tokens, eos_token_id=self.end_id,
                                      pad_token_id=self.end_id, **kw)
        text = self.model.tokenizer.decode(out[0], skip_special_tokens=True).strip()
        for s in p.stop or []:
            text = text.split(s)[0] if s else text
        return AudioReply(text=text, timings=Timings(wall=time.perf_counter() - t0))
