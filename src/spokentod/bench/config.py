"""Bench run configuration (YAML → pydantic). Errors name the YAML field, e.g. ``systems.text.history``.

Relative paths (dataset.path, dataset.manifest, out, cache.path) are relative to the current directory,
like paths given on the command line.

    dataset: {corpus: demo, path: null, manifest: null, sample: {n: 10, stratify: intent, seed: 0}, limit: null}
    audio: {tts: {name: kokoro}, voices: null, rate: 16000, speakers: auto}
    systems:
      text: {type: text, llm: {name: smollm2}, prompt: sales_agent_v1, params: {max_tokens: 48}}
      cascade: {type: cascade, asr: {name: whisper-ct2}, llm: {name: smollm2}, tts: {name: kokoro},
                history: gold, concurrency: 1}
    concurrency: {workers: 4, backends: {openai: 8}}
    seeds: [0]
    out: runs/bench
    cache: {enabled: false, path: null}
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spokentod.backends.base import GenParams
from spokentod.data.source import DialogueSource
from spokentod.errors import SpokenTODError, validation_message

BUILTIN_TYPES = ("cascade", "e2e", "text")
BACKEND_KINDS = ("asr", "llm", "tts", "audiolm")
NEEDS = {"cascade": ("asr", "llm", "tts"), "e2e": ("audiolm",), "text": ("llm",)}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # system names become file and directory names


class ConfigError(SpokenTODError, ValueError):
    """A bad bench config; the message names the file and the YAML field."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudioSettings(_M):
    """How user turns (and agent turns, for E2E audio history) are rendered when the data has no audio."""

    tts: dict[str, Any] = Field(default_factory=lambda: {"name": "kokoro"})
    voices: list[str] | None = None
    rate: int = Field(16000, gt=0)
    speakers: Literal["auto", "user", "all"] = "auto"  # auto: all when an E2E system hears audio history

    @field_validator("tts", mode="before")
    @classmethod
    def _name_only(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


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
    history: Literal["gold", "self"] = "gold"  # self: the seed code's own-reply mode, for comparison
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
            if missing := [k for k in NEEDS[self.type] if getattr(self, k) is None]:
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
        return {k: getattr(self, k) for k in BACKEND_KINDS if getattr(self, k) is not None}

    def build_dict(self) -> dict[str, Any]:
        """The dict handed to systems.build_system (runner-only keys dropped, unset ones left out)."""
        d = self.model_dump(exclude_none=True)
        for k in ("history", "concurrency", "needs_audio"):
            d.pop(k, None)
        return d


class Concurrency(_M):
    workers: int = Field(4, ge=1)  # worker threads: turns in flight at once, over all systems
    # Calls in flight per backend, shared by every system using it. Key: a registered backend name
    # ("openai", "smollm2"), which gives each server (base_url) of that backend its own n slots, or
    # "name@base_url" for one server. In-process backends default to 1 call at a time per model instance
    # (embedded models are not thread-safe; systems with identical backend configs share one instance);
    # HTTP backends are otherwise bounded only by `workers`.
    backends: dict[str, int] = Field(default_factory=dict)

    @field_validator("backends")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        if bad := [k for k, n in v.items() if n < 1]:
            raise ValueError(f"limits must be >= 1 (bad: {bad})")
        return v


class CacheSettings(_M):
    """The backend-call cache (backends/cache.py). Off by default: a hit replays the stored answer, so the
    latency a record shows is not measured on that turn (a replayed stream arrives as one piece), and two
    systems making the same call (a cascade whose ASR was perfect, the text system) share one answer.
    Turn it on for cheap re-runs; records say whether it was on (`cache`)."""

    enabled: bool = False
    path: str | None = None  # default: the user cache dir (~/.cache/spokentod/cache/backends.sqlite)


class BenchConfig(_M):
    dataset: DialogueSource
    audio: AudioSettings = Field(default_factory=AudioSettings)
    systems: dict[str, SystemConfig] = Field(min_length=1)
    concurrency: Concurrency = Field(default_factory=Concurrency)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # each seed = one full pass
    out: str = "runs/bench"
    cache: CacheSettings = Field(default_factory=CacheSettings)
    metrics: dict[str, Any] | None = None  # read by the evaluation stage, not by the runner

    @field_validator("systems")
    @classmethod
    def _safe_names(cls, v: dict[str, SystemConfig]) -> dict[str, SystemConfig]:
        for name in v:
            if not _SAFE_NAME.fullmatch(name):
                raise ValueError(f"system name {name!r} must match {_SAFE_NAME.pattern} (it names files)")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    def protocol(self) -> dict[str, Any]:
        """What decides the records' content: a resumed run must match it. Limits, concurrency, the
        output dir and the cache only change how fast or how much, not what a record holds."""
        d = self.model_dump(mode="json", exclude={"out", "cache", "concurrency", "metrics"})
        d["dataset"].pop("limit", None)
        for s in d["systems"].values():
            s.pop("concurrency", None)
        return d

    def protocol_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.protocol(), sort_keys=True).encode()).hexdigest()[:16]


def parse_config(data: Any, source: str = "<config>") -> BenchConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with dataset, systems, ... at the top level")
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_message(e, source)) from None


def load_config(path: str | Path) -> BenchConfig:
    from spokentod.config_file import read_yaml

    return parse_config(read_yaml(path, ConfigError, "config"), str(path))
