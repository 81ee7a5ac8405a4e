"""JSON-schema-constrained decoding for local transformers models (`GenParams.json_schema`).

Each generation step, the tokens the schema's grammar cannot accept next get -inf logits, so a model of any
size answers with JSON that follows the schema (until max_tokens cuts it). The grammar engine is
`llguidance` (MIT, Rust, no Python dependencies; the engine llama.cpp, vLLM and SGLang can use): it turns
a JSON Schema into a grammar and computes the allowed-token mask over the real tokenizer, so tokens that
span several JSON characters are handled exactly. Its own torch helper compiles a kernel with
`torch.compile` (a C++ toolchain on CPU); the mask is applied here with plain torch instead.

Whitespace is fixed to the compact form the judge prompts show (`", "` and `": "`): a free-whitespace
grammar lets a small model pad with newlines until max_tokens.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Any

import numpy as np

from spokentod.errors import SpokenTODError

COMPILE_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_TOKENIZERS: dict[int, tuple[Any, Any]] = {}  # id(hf tokenizer) → (tokenizer, llguidance tokenizer)
_LOCK = threading.Lock()


class SchemaError(SpokenTODError, ValueError):
    """A JSON schema the grammar engine rejects, or constrained decoding that left the grammar."""


def _llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf  # the tokenizer bridge (a submodule: not imported by the package)
    except ImportError:
        raise SpokenTODError("JSON-constrained decoding with a transformers model needs llguidance: "
                             "pip install llguidance==1.9.1 (in the `embedded` extra)") from None
    return llguidance


def ll_tokenizer(tokenizer: Any, eos_ids: list[int]) -> Any:
    """llguidance's view of a Hugging Face fast tokenizer (about a second to build: kept per tokenizer)."""
    with _LOCK:
        hit = _TOKENIZERS.get(id(tokenizer))
        if hit is not None and hit[0] is tokenizer:
            return hit[1]
        llg = _llguidance()
        try:
            tok = llg.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer), eos_token=eos_ids)
        except ValueError as e:  # a slow (Python) tokenizer
            raise SchemaError(f"JSON-constrained decoding needs a fast tokenizer: {e}") from None
        _TOKENIZERS[id(tokenizer)] = (tokenizer, tok)
        return tok


@lru_cache(maxsize=32)
def _grammar(schema_json: str) -> str:
    llg = _llguidance()
    grammar = llg.LLMatcher.grammar_from_json_schema(schema_json, overrides=COMPILE_OPTIONS)
    failed, msgs = llg.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise SchemaError(f"JSON schema not usable for constrained decoding: {msgs[0] if msgs else 'invalid'}")
    return grammar


class SchemaLogits:
    """A transformers LogitsProcessor: at each step, only tokens the schema allows next keep their logits."""

    def __init__(self, tokenizer: Any, schema: dict[str, Any], prompt_len: int, eos_ids: list[int]):
        llg = _llguidance()
        self.tok = ll_tokenizer(tokenizer, eos_ids)
        # not sort_keys: the order of "properties" is the order the grammar writes them in
        self.matcher = llg.LLMatcher(self.tok, _grammar(json.dumps(schema)), log_level=0)
        if self.matcher.is_error():
            raise SchemaError(f"JSON schema not usable for constrained decoding: {self.matcher.get_error()}")
        self.prompt_len, self.consumed = prompt_len, 0
        self.eos_ids = eos_ids

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if input_ids.shape[0] != 1:
            raise SchemaError("JSON-constrained decoding runs one sequence at a time")
        new = input_ids[0, self.prompt_len + self.consumed:].tolist()
        for t in new:  # the tokens picked since the last step (one, or none at the first)
            if not self.matcher.consume_token(int(t)):
                raise SchemaError(f"constrained decoding left the grammar: {self.matcher.get_error()}")
        self.consumed += len(new)
        vocab = scores.shape[-1]
        # The mask is built in numpy (one torch op per step: torch's own small ops are costly on busy cores).
        blocked = np.ones(vocab, dtype=bool)
        if self.matcher.is_stopped():  # the object is complete: only the end of the turn is left
            blocked[[i for i in self.eos_ids if i < vocab]] = False
        else:
            bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            n = min(vocab, len(bits))  # a model's vocabulary may be padded past the tokenizer's
            blocked[:n] = bits[:n] == 0
        return scores.masked_fill(torch.from_numpy(blocked).to(scores.device), float("-inf"))
