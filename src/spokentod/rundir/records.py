"""The typed records of a run directory: results, metrics, run metadata and the plan.

Writers build these and store `to_json()`; the JSON keys are the field names, so files written before
these types existed read the same. Every model allows extra keys: a plug-in system's or an older
version's additions are carried through, never dropped. Readers of JSONL files get plain dicts from the
store (a damaged or foreign record must still be countable); `model_validate` types one when needed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Key = tuple[str, str, int, int]  # (system, dialogue_id, turn, seed)


def key_of(record: dict[str, Any]) -> Key:
    return (record["system"], record["dialogue_id"], int(record["turn"]), int(record["seed"]))


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    def to_json(self, *, exclude_unset: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (anything a plug-in put in a free-form field is written as its str)."""
        return self.model_dump(mode="json", fallback=str, exclude_unset=exclude_unset)


class ResultRecord(_Record):
    """One attempt at one (system, dialogue, user turn, seed): `results/<system>.jsonl`, one per line.

    The last record of a key is its result (a retry supersedes a failed attempt).
    """

    system: str
    dialogue_id: str
    turn: int  # index of the user turn in the dialogue
    seed: int = 0
    attempt: int = 1
    phase: str | None = None
    intent: str | None = None
    history: str = "gold"  # gold | self: what the system saw before this turn
    context_turns: int = 0
    context_chars: int = 0
    user_text: str | None = None
    user_audio: str | None = None  # relative to the folder the run's turn audio lives in
    text: str | None = None  # the reply text ("" for an empty reply)
    user_transcript: str | None = None  # what the system heard (cascade ASR)
    audio_path: str | None = None  # reply audio, relative to the run directory
    audio_seconds: float | None = None
    timings: dict[str, Any] = Field(default_factory=dict)  # seconds per stage: asr, llm, ttft, tts, ...
    runner: dict[str, Any] = Field(default_factory=dict)  # wait_s (for a worker slot), respond_s
    error: str | None = None
    error_reason: str | None = None  # short and countable: "<stage>: timeout|connection|http NNN|..."
    truncated: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)
    cache: bool = False  # whether the backend-call cache was on (replayed latencies are not measured)
    shard: list[int] = Field(default_factory=lambda: [1, 1])
    started: str | None = None
    finished: str | None = None


class MetricRecord(_Record):
    """The metrics of one final reply: `metrics/<system>.jsonl`, one per (dialogue, turn, seed).

    A metric that could not be computed is None in `metrics` with its reason in `missing`, never 0.
    """

    system: str
    dialogue_id: str
    turn: int
    seed: int = 0
    phase: str | None = None
    turn_ordinal: int | None = None  # 1-based among the dialogue's user turns: R1..Rn
    metrics: dict[str, float | None] = Field(default_factory=dict)
    missing: dict[str, str] = Field(default_factory=dict)
    judge: dict[str, Any] = Field(default_factory=dict)  # raw judge reasons/scores, failures, primary_failure
    transcript: str | None = None  # standardized ASR transcript (text-only systems: their text)
    text: str | None = None  # the generated reply text
    error: str | None = None  # the reply's error, when the system failed
    reply_hash: str | None = None  # text + audio + error: an unchanged reply keeps its other metrics


class Session(_Record):
    """One `bench run` process on a run directory (a resumed run has several)."""

    started: str
    ended: str | None = None
    status: str = "running"  # running | finished | interrupted | failed | killed (never wrote its end)
    limit: int | None = None
    pid: int | None = None
    wall_s: float | None = None
    ran: int | None = None
    error: str | None = None


class RunMeta(_Record):
    """`run.json` (`run.shard-i-of-n.json`). Written with `to_json(exclude_unset=True)`: a key appears
    once it is known (`ended` and `counts` when a session ends; `merged_from`... only for merged runs)."""

    spokentod_version: str | None = None
    git: dict[str, Any] | None = None
    protocol_hash: str | None = None
    protocol: dict[str, Any] | None = None  # what decides a record's content; a resume must match it
    config: dict[str, Any] | None = None  # the whole bench config, secrets scrubbed
    shard: list[int] | None = None
    systems: dict[str, Any] | None = None  # system name → identity (backends, prompt hashes)
    speaks: dict[str, bool] | None = None  # system name → writes reply audio (else text only); scoring reads it
    host: dict[str, Any] | None = None
    status: str | None = None  # running | finished | interrupted | failed | merged
    started: str | None = None
    sessions: list[Session] = Field(default_factory=list)
    ended: str | None = None
    counts: dict[str, dict[str, int]] | None = None
    # merged runs (`bench merge`)
    merged_from: list[dict[str, Any]] | None = None
    gaps: dict[str, int] | None = None
    missing_shards: list[str] | None = None
    duplicates: int | None = None


class Plan(_Record):
    """`plan.json` (`plan.shard-i-of-n.json`): the work of a run, for `status` and `merge`."""

    shard: list[int] = Field(default_factory=lambda: [1, 1])
    protocol_hash: str | None = None
    systems: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0])
    dialogues_before_sharding: int | None = None
    dialogues: list[tuple[str, list[int]]] = Field(default_factory=list)  # (dialogue id, its user turns)

    def keys(self) -> dict[str, list[Key]]:
        """Expected keys per system, in plan order (dialogue, turn, seed)."""
        return {system: [(system, did, t, seed) for did, turns in self.dialogues for t in turns
                         for seed in self.seeds] for system in self.systems}
