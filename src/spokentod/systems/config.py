"""A system under test as configured (the `systems:` entries of a bench config): its type, the backends
that type needs, prompt, generation parameters and type-specific settings."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spokentod.backends.base import KINDS, GenParams

# The built-in system types and the backends each needs; a plug-in type is "module:Class".
BACKENDS_OF_TYPE = {"cascade": ("asr", "llm", "tts"), "e2e": ("audiolm",), "text": ("llm",)}
BUILTIN_TYPES = tuple(BACKENDS_OF_TYPE)
_GEN_FIELDS = {f.name for f in fields(GenParams)}


class SystemConfig(BaseModel):
    """One system under test. Built-in types take the fields below; a plug-in type "module:Class" may
    take any extra keys (they are passed on in the config dict)."""

    model_config = ConfigDict(extra="allow")
    type: str
    asr: dict[str, Any] | None = None
    llm: dict[str, Any] | None = None
    tts: dict[str, Any] | None = None
    audiolm: dict[str, Any] | None = None
    prompt: str | None = None  # bundled prompt name or a file path; its sha256 goes into run.json
    params: dict[str, Any] = Field(default_factory=dict)  # generation parameters (GenParams fields)
    # self: the reference implementation's own-reply mode; a bench config may give [gold, self] (bench/config.py)
    history: Literal["gold", "self"] = "gold"
    e2e_history: Literal["text", "audio", "both"] = "text"
    user_input: Literal["audio", "text"] = "audio"  # e2e "text mode": the audio LM reads the gold user text
    concurrency: int | None = Field(None, ge=1)  # turns of this system in flight at once (default: workers)
    voice: str | None = None
    streaming: bool = True
    chunking: dict[str, Any] | None = None  # cascade streaming: sentences.ChunkPolicy fields (first_chunk_words ...)
    use_intent: bool = True
    max_context_tokens: int | None = Field(None, ge=1)
    needs_audio: bool | None = None  # plug-ins: does it need user audio? (built-ins: known by type)

    @field_validator("asr", "llm", "tts", "audiolm", mode="before")
    @classmethod
    def _name_only(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in BUILTIN_TYPES and not re.fullmatch(r"[\w.]+:\w+", v):
            raise ValueError(f"unknown system type {v!r}: use cascade, e2e, text or 'module:Class'")
        return v

    @field_validator("params")
    @classmethod
    def _gen_params(cls, v: dict[str, Any]) -> dict[str, Any]:
        if unknown := sorted(set(v) - _GEN_FIELDS):
            raise ValueError(f"unknown generation parameter(s) {unknown}; known: {sorted(_GEN_FIELDS)}")
        return v

    @model_validator(mode="after")
    def _fits_type(self) -> SystemConfig:
        if self.type in BUILTIN_TYPES:
            if extra := sorted(self.model_extra or {}):
                raise ValueError(f"unknown field(s) {extra} for a {self.type} system")
            if missing := [k for k in BACKENDS_OF_TYPE[self.type] if getattr(self, k) is None]:
                raise ValueError(f"a {self.type} system needs backend config(s) {missing}")
        return self

    @property
    def wants_audio(self) -> bool:
        if self.needs_audio is not None:
            return self.needs_audio
        return self.type == "cascade" or (self.type == "e2e" and self.user_input == "audio")

    @property
    def wants_agent_audio(self) -> bool:
        return self.type == "e2e" and self.e2e_history in ("audio", "both")

    def backend_specs(self) -> dict[str, dict[str, Any]]:
        """kind → backend config, for the backends this system names."""
        return {k: getattr(self, k) for k in KINDS if getattr(self, k) is not None}

    def build_dict(self) -> dict[str, Any]:
        """The config as a plain dict, as a plug-in system class gets it (runner-only keys dropped, unset
        ones left out)."""
        d = self.model_dump(exclude_none=True)
        for k in ("history", "concurrency", "needs_audio"):
            d.pop(k, None)
        return d
