"""DST examples: dialogues → one example per user turn, and the model's targets (the tracker's output is read
back by infer/parse.py).

An example is a user turn with ALL earlier turns (gold text) as history and the cumulative state after the
turn. A corpus may list several gold values for a slot (MultiWOZ 2.2, SGD); a target needs one, so the
first is used (scoring still accepts any of them from the reference). Examples that cannot be used are
never dropped silently: every one is counted by reason in a DropReport.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from spokentod.data.manifest import resolve_audio_path
from spokentod.data.schema import Dialogue, Turn
from spokentod.errors import DataError


@dataclass(frozen=True)
class Example:
    dialogue_id: str
    turn: int  # Turn.index of the user turn
    ordinal: int  # 0-based rank among ALL user turns of the dialogue (dropped ones too: stable)
    history: tuple[tuple[str, str], ...]  # (speaker "user"/"agent", gold text) of all earlier turns
    transcript: str  # gold user text of this turn
    state: dict  # cumulative state after this turn {domain: {slot: value}}, one value per slot
    audio: str | None  # absolute path of the user audio (speech examples); None for text examples
    duration: float | None
    domains: tuple[str, ...]  # the corpus's active domains for the turn when given, else the state's
    prev_state: dict = field(default_factory=dict)  # gold state after the dialogue's previous user turn ({} first)

    @property
    def id(self) -> str:
        return f"{self.dialogue_id}/{self.turn}"


class HistoryFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_prefix: str = "user: "
    agent_prefix: str = "agent: "
    separator: str = "\n"
    max_turns: int | None = Field(None, ge=0)  # keep only the last N turns
    empty: str = "(none)"


def format_history(history: Iterable[tuple[str, str]], fmt: HistoryFormat | None = None) -> str:
    fmt, turns = fmt or HistoryFormat(), list(history)
    if fmt.max_turns is not None:
        turns = turns[max(0, len(turns) - fmt.max_turns):]
    if not turns:
        return fmt.empty
    prefix = {"user": fmt.user_prefix, "agent": fmt.agent_prefix}
    return fmt.separator.join(prefix[getattr(s, "value", s)] + text for s, text in turns)  # (a Speaker too)


def gold_state(state: dict | None) -> dict[str, dict[str, str]]:
    """A corpus state → sorted {domain: {slot: value}} with one value per slot (a list gives its first);
    domains without slots are left out."""
    out: dict[str, dict[str, str]] = {}
    for domain in sorted(state or {}):
        slots = {s: (v[0] if isinstance(v, list) else v) for s, v in sorted(state[domain].items())
                 if v is not None and v != []}
        if slots:
            out[domain] = slots
    return out


def target_json(transcript: str, state: dict) -> str:
    """The DST target ``{"transcript": ..., "state": {...}}``: domains and slots sorted, one spelling."""
    return json.dumps({"transcript": transcript, "state": gold_state(state)},
                      ensure_ascii=False, separators=(", ", ": "))


NONE = "none"  # a slot the turn removes, in a state update (the tracker applies it by dropping the slot)


def state_update(prev: dict, state: dict) -> dict[str, dict[str, str]]:
    """What a turn changes: the slots of `state` that are new or differ from `prev`, and `prev`'s slots that
    `state` no longer has, set to "none". apply_update(prev, state_update(prev, state)) == state."""
    prev, state = gold_state(prev), gold_state(state)
    out: dict[str, dict[str, str]] = {}
    for d in sorted(set(prev) | set(state)):
        for s in sorted(set(prev.get(d, {})) | set(state.get(d, {}))):
            new = state.get(d, {}).get(s, NONE)
            if new != prev.get(d, {}).get(s, NONE):
                out.setdefault(d, {})[s] = new
    return out


def apply_update(prev: dict, update: dict) -> dict[str, dict[str, str]]:
    """`prev` with `update` applied: its slots set, "none" ones removed (the inverse of state_update)."""
    out = {d: dict(slots) for d, slots in gold_state(prev).items()}
    for d, slots in gold_state(update).items():
        for s, v in slots.items():
            if v == NONE:
                out.get(d, {}).pop(s, None)
            else:
                out.setdefault(d, {})[s] = v
    return gold_state(out)


def compact_state(state: dict) -> str:
    """A state as compact JSON for a prompt (no spaces: fewer tokens)."""
    return json.dumps(gold_state(state), ensure_ascii=False, separators=(",", ":"))


def asr_target(transcript: str) -> str:
    """Phase-1 (ASR pre-training) target: the transcript itself."""
    return transcript


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_audio_s: float = Field(0.0, ge=0)
    max_audio_s: float | None = Field(30.0, gt=0)
    max_history_tokens: int | None = Field(None, ge=0)  # of the formatted history (HistoryFormat applied)
    max_target_tokens: int | None = Field(None, ge=0)  # of target_json(...)
    require_state: bool = True  # False: a user turn without a state gets {}


@dataclass
class DropReport:
    """What was left out, by reason ("no_audio", "audio_too_long", ...), with the first few example ids."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    kept: int = 0
    SHOWN: ClassVar[int] = 5

    def add(self, reason: str, example_id: str) -> None:
        self.counts[reason] += 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < self.SHOWN:
            ids.append(example_id)

    @property
    def dropped(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """E.g. "12 of 100 examples: no_audio 10 (e.g. d1/0, d1/2); audio_too_long 2 (e.g. d7/4)"."""
        parts = [f"{r} {n} (e.g. {', '.join(self.examples[r])})" for r, n in self.counts.most_common()]
        head = f"{self.dropped} of {self.dropped + self.kept} examples"
        return head + (": " + "; ".join(parts) if parts else "")

    def as_dict(self) -> dict:
        return {"kept": self.kept, "dropped": self.dropped, "counts": dict(self.counts),
                "examples": {r: list(ids) for r, ids in self.examples.items()}}


def _active_domains(md: dict) -> tuple[str, ...] | None:
    v = md.get("active_domains", md.get("services_in_turn"))  # SGD: the services of the turn's frames
    return tuple(sorted({str(d).strip().lower() for d in v})) if isinstance(v, (list, tuple)) else None


def _speech(d: Dialogue, t: Turn, root: str | os.PathLike | None, f: Filters) -> tuple[str, float] | str:
    """The turn's audio (absolute path, duration) or why it cannot be used."""
    if t.audio is None:
        return "no_audio"
    if root is None and not Path(t.audio.path).is_absolute():
        raise DataError("<dialogues>", d.id, f"turns.{t.index}.audio.path",
                        "relative audio path but no audio_root: pass the manifest's folder")
    try:
        path = resolve_audio_path(root, t.audio.path) if root is not None else Path(t.audio.path).resolve()
    except ValueError:  # it escapes audio_root
        return "bad_audio_path"
    dur = t.audio.duration
    return ("audio_file_missing" if not path.is_file() else "audio_too_short" if dur < f.min_audio_s
            else "audio_too_long" if f.max_audio_s is not None and dur > f.max_audio_s else (str(path), dur))


def _too_long(f: Filters, count: Callable[[str], int] | None, history: tuple, fmt: HistoryFormat | None,
              transcript: str, state: dict) -> str | None:
    if f.max_history_tokens is not None and count(format_history(history, fmt)) > f.max_history_tokens:
        return "history_too_long"
    if f.max_target_tokens is not None and count(target_json(transcript, state)) > f.max_target_tokens:
        return "target_too_long"
    return None


def dialogue_examples(dialogues: Iterable[Dialogue], modality: Literal["speech", "text"],
                      audio_root: str | os.PathLike | None = None, filters: Filters | None = None,
                      count_tokens: Callable[[str], int] | None = None,
                      history_format: HistoryFormat | None = None,
                      report: DropReport | None = None) -> list[list[Example]]:
    """Examples grouped per dialogue, in turn order; dialogues left with none are omitted. Drops are counted
    into `report` when one is given (make_examples returns one)."""
    f, report = filters or Filters(), report if report is not None else DropReport()
    if modality not in ("speech", "text"):
        raise ValueError(f"modality must be 'speech' or 'text', got {modality!r}")
    if count_tokens is None and (f.max_history_tokens is not None or f.max_target_tokens is not None):
        raise ValueError("a token filter (max_history_tokens/max_target_tokens) needs count_tokens")
    groups = []
    for d in dialogues:
        group, prev = [], {}
        for ordinal, t in enumerate(d.user_turns):
            history = tuple((p.speaker.value, p.text) for p in d.turns[:t.index])
            state = gold_state(t.state)
            prev_state, prev = prev, (state if t.state is not None else prev)
            audio = _speech(d, t, audio_root, f) if modality == "speech" else (None, None)
            reason = ("no_state" if t.state is None and f.require_state
                      else audio if isinstance(audio, str)
                      else _too_long(f, count_tokens, history, history_format, t.text, state))
            if reason:
                report.add(reason, f"{d.id}/{t.index}")
                continue
            domains = _active_domains(t.metadata) or tuple(state)
            group.append(Example(d.id, t.index, ordinal, history, t.text, state, *audio, domains, prev_state))
        report.kept += len(group)
        if group:
            groups.append(group)
    return groups


def make_examples(dialogues: Iterable[Dialogue], modality: Literal["speech", "text"],
                  audio_root: str | os.PathLike | None = None, filters: Filters | None = None,
                  count_tokens: Callable[[str], int] | None = None,
                  history_format: HistoryFormat | None = None) -> tuple[list[Example], DropReport]:
    """One example per usable user turn. Speech needs the turn's own audio file (relative paths resolve
    against `audio_root`, the manifest's folder, and must stay inside it); text examples have audio None.
    Token filters measure the formatted history (`history_format`) and target_json."""
    report = DropReport()
    groups = dialogue_examples(dialogues, modality, audio_root, filters, count_tokens, history_format, report)
    return [e for g in groups for e in g], report
