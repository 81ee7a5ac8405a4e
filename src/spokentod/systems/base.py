"""What every system under test sees and returns, under the gold-context protocol.

At user turn t a system gets `Context` (the gold turns before t, never its own earlier replies unless
`history: self` is configured) and the gold user turn t (text, and audio for spoken systems). It
returns a `SystemReply`; a failure is a reply with `error` set, never an exception out of `respond`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from spokentod.data.schema import Dialogue, Intent, Turn


@dataclass
class Context:
    dialogue_id: str
    turns: list[Turn]  # gold turns before t, in order (text; audio where rendered)
    intent: Intent | None = None
    truncated: bool = False  # set when a model window forced token truncation (same rule for every system)

    @classmethod
    def gold(cls, dialogue: Dialogue, t: int) -> Context:
        return cls(dialogue.id, list(dialogue.turns[:t]), dialogue.intent)


@dataclass
class SystemReply:
    text: str = ""
    audio_path: str | None = None  # relative to the run directory
    audio_seconds: float | None = None
    user_transcript: str | None = None  # what the system heard (cascade ASR)
    timings: dict[str, float] = field(default_factory=dict)  # per stage: asr, llm, ttft, tts, first_audio, total
    error: str | None = None  # "<stage>: <ExceptionType>: <message>"
    error_reason: str | None = None  # short and countable: "<stage>: <errors.error_cause(exc)>"
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class System(Protocol):
    name: str
    # Whether the system speaks: True if `respond` writes reply audio to `audio_out` (cascade, e2e), False if
    # it answers in text only (text). Scoring follows it: a spoken reply is judged on its standardized ASR
    # transcript and gets the audio metrics; a text reply is judged on its text, audio metrics not applicable.
    # A plug-in ("module:Class") must declare it (a class or instance attribute); build_system checks it.
    speaks: bool

    def respond(self, context: Context, user_turn: Turn, audio_out: Path | None = None) -> SystemReply:
        """Answer user_turn given context; write reply audio to `audio_out` (a .wav path) if spoken."""
        ...

    def identity(self) -> dict[str, Any]:
        """Backends' identities + prompt hash: recorded in run.json and used by caches."""
        ...
