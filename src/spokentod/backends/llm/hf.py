"""Local Hugging Face causal LMs (any `AutoModelForCausalLM` checkpoint with a chat template).

Config: ``{"name": "hf", "model": "<path or hub id>", "revision": ..., "dtype": "float32|bfloat16|auto",
"device": "cpu|cuda|auto", "chat_template": <Jinja>, "template_fallback": false, "threads": N,
"decode_nice": N, "prefix_cache": 8}`` (decode_nice: lower the generating thread's CPU priority after the
first token, e.g. so a TTS on the same cores goes first; see ChatGenerator. prefix_cache: how many recent
prompts' keys/values a later prompt with the same leading tokens reuses, 0 to turn off; see _prefix_cache).
Hub ids load from the local Hugging Face cache only when HF_HUB_OFFLINE=1 (spokentod never needs the
network at run time). The embedded SmolLM2 and Gemma-3-270M backends are this class pointed at a
converted directory (see smollm2.py, gemma3.py).

Token log-probabilities: `chat` with ``GenParams(logprobs=True, top_logprobs=k)`` fills
`Completion.logprobs` (OpenAI's shape, from the raw logits; see _generate.token_logprobs). `stream` gives
text only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from spokentod.backends import _hf
from spokentod.backends.base import Backend, Completion, GenParams, Message, register
from spokentod.backends.llm._generate import ChatGenerator


@register("llm", "hf")
class HFCausalLM(Backend):
    supports_logprobs = True  # chat() honours GenParams.logprobs / top_logprobs

    def __init__(
        self,
        model: str | os.PathLike,
        revision: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        chat_template: str | None = None,
        template_fallback: bool = False,
        threads: int | None = None,
        trust_remote_code: bool = False,
        decode_nice: int = 0,
        prefix_cache: int = 8,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _hf.set_threads(threads)
        self.model_ref, self.revision = str(model), revision
        self.device = _hf.resolve_device(device)
        # float32 by default: on CPU it is the fast path, and bf16/fp16 change the generated text.
        kw: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_ref, **kw)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_ref, dtype=_hf.resolve_dtype(dtype), **kw
        )
        self.model.to(self.device).eval()
        self.gen = ChatGenerator(self.model, self.tokenizer, chat_template, template_fallback, decode_nice,
                                 prefix_cache)

    def identity(self) -> dict[str, Any]:
        ident = super().identity() | _hf.model_identity(self.model_ref, self.revision, self.model)
        return ident | {"dtype": _hf.dtype_name(self.model), "device": self.device} | self.gen.identity()

    def chat(self, messages: list[Message], params: GenParams | None = None) -> Completion:
        return self.gen.chat(messages, params)

    def stream(self, messages: list[Message], params: GenParams | None = None) -> Iterator[str]:
        return self.gen.stream(messages, params)
