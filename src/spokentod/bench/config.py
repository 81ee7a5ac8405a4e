"""Bench run configuration (YAML → pydantic). Errors name the YAML field, e.g. ``systems.text.history``.

Relative paths (dataset.path, dataset.manifest, out, cache.path) are relative to the current directory,
like paths given on the command line.

    dataset: {corpus: demo, path: null, manifest: null, sample: {n: 10, stratify: intent, seed: 0}, limit: null}
    audio: {tts: {name: kokoro}, voices: null, rate: 16000, speakers: auto}
    systems:
      text: {type: text, llm: {name: smollm2}, prompt: sales_agent_v1, params: {max_tokens: 48}}
      cascade: {type: cascade, asr: {name: whisper-ct2}, llm: {name: smollm2}, tts: {name: kokoro},
                history: gold, concurrency: 1}
      e2e: {type: e2e, audiolm: {name: speechlm}, history: [gold, self]}   # → e2e-gold and e2e-self
    concurrency: {workers: 4, backends: {openai: 8}}
    seeds: [0]
    out: runs/bench
    cache: {enabled: false, path: null}
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spokentod.config_file import apply_overrides, read_yaml, validate
from spokentod.data.source import DialogueSource
from spokentod.errors import SpokenTODError
from spokentod.systems.config import SystemConfig

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # system names become file and directory names
HISTORY_MODES = ("gold", "self")


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

    @field_validator("systems", mode="before")
    @classmethod
    def _expand_history(cls, v: Any) -> Any:
        return expand_history(v)

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


def expand_history(systems: Any) -> Any:
    """`history: [gold, self]` on a system entry → two systems, `<name>-gold` and `<name>-self`, identical but
    for `history`: they run on the same dialogues and seeds, and the report pairs them turn by turn
    (analysis/pairing.py finds pairs by that very property, so two entries written out by hand pair too).
    A one-item list is the plain value. Anything else is left for the field validators to reject."""
    if not isinstance(systems, dict):
        return systems
    out: dict[Any, Any] = {}
    for name, sc in systems.items():
        modes = sc.get("history") if isinstance(sc, dict) else None
        if not isinstance(modes, list):
            if name in out:
                raise ValueError(f"system {name!r} is defined twice (once by expanding a history list)")
            out[name] = sc
            continue
        if not modes or any(m not in HISTORY_MODES for m in modes) or len(set(modes)) != len(modes):
            raise ValueError(f"{name}.history: a list must name distinct modes out of {list(HISTORY_MODES)} "
                             f"(e.g. [gold, self]), got {modes!r}")
        names = {m: name if len(modes) == 1 else f"{name}-{m}" for m in modes}
        for mode, new in names.items():
            if new in out or (new != name and new in systems):
                raise ValueError(f"{name}.history: expanding {modes} makes a system {new!r}, but a system of "
                                 "that name is already configured; rename one of them")
            out[new] = {**sc, "history": mode}
    return out


def parse_config(data: Any, source: str = "<config>", overrides: Iterable[str] = ()) -> BenchConfig:
    """A bench config mapping as a BenchConfig, with ``key=value`` overrides set first
    (``systems.e2e.audiolm.adapter=DIR``, as ``bench run --set``); errors name `source`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with dataset, systems, ... at the top level")
    if overrides:
        data = apply_overrides(data, overrides, ConfigError)
    return validate(BenchConfig, data, source, ConfigError, "bench")


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> BenchConfig:
    return parse_config(read_yaml(path, ConfigError, "config"), str(path), overrides)
