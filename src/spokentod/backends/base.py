"""Backend protocols, result types and one decorator registry per kind (asr, llm, tts, audiolm).

A backend is configured by a dict such as ``{"name": "whisper-ct2", "model": "tiny.en"}``: ``name``
picks the registered class, the other keys are its constructor arguments. Outside packages add
backends through the ``spokentod.backends`` entry-point group (``"<kind>.<name>" = "module:Class"``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import numpy as np

KINDS = ("asr", "llm", "tts", "audiolm")


# ---------------------------------------------------------------- results


@dataclass
class Timings:
    """Seconds. `first` is time to first token (LLM) or first byte/chunk (audio); rtf = wall / audio seconds."""

    wall: float = 0.0
    first: float | None = None
    rtf: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Transcript:
    text: str
    timings: Timings = field(default_factory=Timings)
    language: str | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    ttft: float | None = None
    tokens: int = 0
    timings: Timings = field(default_factory=Timings)
    finish_reason: str | None = None
    # Token log-probabilities when they were asked for (GenParams.logprobs) and the backend can give them,
    # in OpenAI's `choices[0].logprobs.content` shape: [{"token", "logprob", "bytes", "top_logprobs":
    # [{"token", "logprob", "bytes"}]}]; None when not asked for or not available.
    logprobs: list[dict[str, Any]] | None = None


@dataclass
class AudioOut:
    samples: np.ndarray  # float32 mono
    rate: int
    timings: Timings = field(default_factory=Timings)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate if self.rate else 0.0


@dataclass
class AudioReply:
    """What an audio LM answers: text, and audio when it speaks."""

    text: str
    audio: AudioOut | None = None
    timings: Timings = field(default_factory=Timings)


# Chat messages follow the OpenAI shape: {"role": ..., "content": str | [parts]}; audio parts are
# {"type": "input_audio", "input_audio": {"data": <base64 wav>, "format": "wav"}} or
# {"type": "audio", "samples": np.ndarray, "rate": int} or {"type": "audio", "audio": <path|bytes|AudioOut>}
# in-process.
Message = dict[str, Any]


@dataclass
class GenParams:
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    stop: list[str] | None = None
    # Ask for token log-probabilities (Completion.logprobs) and the `top_logprobs` most likely alternatives
    # at each position (0-20, as OpenAI). Backends that cannot give them ignore the request.
    logprobs: bool = False
    top_logprobs: int = 0
    # A JSON Schema the answer must follow: constrained decoding in llamacpp and the hf family (hf, smollm2,
    # gemma3-270m), sent as `response_format` by openai (the server decides); other backends ignore it.
    json_schema: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # Left out at their defaults, so cache keys and recorded params of plain requests are as before.
        for k in ("logprobs", "top_logprobs", "json_schema"):
            if not d[k]:
                del d[k]
        return d


# ---------------------------------------------------------------- protocols


class Backend:
    """Shared base: every backend has a stable identity used by the cache and recorded in results."""

    kind: str = ""
    name: str = ""
    # True for backends that call a server (many calls may be in flight at once); False for in-process
    # models, which are not thread-safe and get one call at a time per instance (backends/limits.py).
    remote: bool = False

    def identity(self) -> dict[str, Any]:
        """Class + everything that changes outputs (model path/id, revision, base_url, dtype, quantization)."""
        return {"kind": self.kind, "name": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}"}

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:16]


@runtime_checkable
class ASR(Protocol):
    def transcribe(self, audio: Any, language: str | None = None) -> Transcript: ...


@runtime_checkable
class LLM(Protocol):
    def chat(self, messages: list[Message], params: GenParams | None = None) -> Completion: ...

    def stream(self, messages: list[Message], params: GenParams | None = None) -> Iterator[str]: ...


@runtime_checkable
class TTS(Protocol):
    def synthesize(self, text: str, voice: str | None = None) -> AudioOut: ...


@runtime_checkable
class AudioLM(Protocol):
    def respond(self, messages: list[Message], params: GenParams | None = None) -> AudioReply: ...


# ---------------------------------------------------------------- registry

_REGISTRY: dict[str, dict[str, type]] = {k: {} for k in KINDS}
_BUILTINS_LOADED = False


def register(kind: str, name: str) -> Callable[[type], type]:
    """Class decorator: ``@register("tts", "kokoro")``."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown backend kind {kind!r}; expected one of {KINDS}")

    def deco(cls: type) -> type:
        cls.kind, cls.name = kind, name
        _REGISTRY[kind][name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    """Import the built-in backend modules (they register themselves) and entry-point plug-ins."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import importlib
    import pkgutil

    import spokentod.backends as pkg

    for kind in KINDS:
        sub = importlib.import_module(f"{pkg.__name__}.{kind}")
        for mod in pkgutil.iter_modules(sub.__path__):
            importlib.import_module(f"{sub.__name__}.{mod.name}")
    for ep in entry_points(group="spokentod.backends"):
        kind, _, name = ep.name.partition(".")
        if kind in _REGISTRY and name:
            _REGISTRY[kind].setdefault(name, ep)  # resolved lazily in get_class


def available(kind: str) -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY[kind])


def get_class(kind: str, name: str) -> type:
    _load_builtins()
    try:
        cls = _REGISTRY[kind][name]
    except KeyError:
        raise KeyError(f"no {kind} backend named {name!r}; available: {', '.join(available(kind))}") from None
    if not isinstance(cls, type):  # an entry point not loaded yet
        cls = cls.load()
        cls.kind, cls.name = kind, name
        _REGISTRY[kind][name] = cls
    return cls


def create(kind: str, config: dict[str, Any] | str) -> Any:
    """Build a backend from ``{"name": ..., **kwargs}`` (or just a name)."""
    cfg = {"name": config} if isinstance(config, str) else dict(config)
    name = cfg.pop("name", None)
    if not name:
        raise ValueError(f"{kind} backend config needs a 'name': {config!r}")
    return get_class(kind, name)(**cfg)
