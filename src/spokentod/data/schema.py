"""The one dialogue schema every corpus is loaded into (pydantic v2)."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Speaker(str, Enum):
    user = "user"
    agent = "agent"


class Phase(str, Enum):
    """SalesBot-style dialogue phase; None for single-phase corpora (MultiWOZ, SGD)."""

    chitchat = "chitchat"
    transition = "transition"
    task = "task"


# {domain: {slot: value}}; a value may be a list when the corpus accepts several gold values
# (MultiWOZ 2.2, SGD). Cumulative: the state after this turn.
State = dict[str, dict[str, str | list[str]]]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


class Audio(_Model):
    path: str
    sample_rate: int = Field(gt=0)
    duration: float = Field(ge=0)
    voice: str | None = None


class Intent(_Model):
    type: str
    description: str | None = None


class Turn(_Model):
    index: int = Field(ge=0)
    speaker: Speaker
    text: str
    phase: Phase | None = None
    audio: Audio | None = None
    state: State | None = None
    acts: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Dialogue(_Model):
    id: str = Field(min_length=1)
    source: str
    intent: Intent | None = None
    turns: list[Turn]
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("turns")
    @classmethod
    def _ordered_non_empty(cls, turns: list[Turn]) -> list[Turn]:
        if not turns:
            raise ValueError("dialogue has no turns")
        for i, t in enumerate(turns):
            if t.index != i:
                raise ValueError(f"turns[{i}].index is {t.index}, expected {i} (turns must be in order)")
        return turns

    @property
    def user_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.speaker == Speaker.user]

    def phase_of(self, phase: Phase) -> list[Turn]:
        return [t for t in self.turns if t.phase == phase]

    @property
    def transition_index(self) -> int | None:
        """Index of the first transition turn, if the dialogue is multi-phase."""
        for t in self.turns:
            if t.phase == Phase.transition:
                return t.index
        return None


def make_turns(items: list[tuple[Speaker, str]], **common: Any) -> list[Turn]:
    """Build indexed turns from (speaker, text) pairs."""
    return [Turn(index=i, speaker=s, text=x, **common) for i, (s, x) in enumerate(items)]
