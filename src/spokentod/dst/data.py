"""DST data: dialogues → one example per user turn, the model's targets, ASR items (output parsing: parse.py).

An example is a user turn with ALL earlier turns (gold text) as history and the cumulative state after the
turn. A corpus may list several gold values for a slot (MultiWOZ 2.2, SGD); a target needs one, so the
first is used (scoring still accepts any of them from the reference). Examples that cannot be used are
never dropped silently: every one is counted by reason in a DropReport.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from spokentod.data.manifest import read_manifest, resolve_audio_path
from spokentod.data.schema import Dialogue, Turn
from spokentod.errors import DataError, Problem, SpokenTODError


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
        group = []
        for ordinal, t in enumerate(d.user_turns):
            history = tuple((p.speaker.value, p.text) for p in d.turns[:t.index])
            state = gold_state(t.state)
            audio = _speech(d, t, audio_root, f) if modality == "speech" else (None, None)
            reason = ("no_state" if t.state is None and f.require_state
                      else audio if isinstance(audio, str)
                      else _too_long(f, count_tokens, history, history_format, t.text, state))
            if reason:
                report.add(reason, f"{d.id}/{t.index}")
                continue
            domains = _active_domains(t.metadata) or tuple(state)
            group.append(Example(d.id, t.index, ordinal, history, t.text, state, *audio, domains))
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


# --- ASR items (phase 1) -------------------------------------------------------------------------------

@dataclass(frozen=True)
class AsrItem:
    id: str
    audio: str  # absolute path of a whole audio file
    text: str
    duration: float | None


# An AsrItem is a whole file: a supervision must cover its recording but for this much at either end.
_WHOLE_TOL_S = 0.5


def load_asr_items(path: str | os.PathLike) -> list[AsrItem]:
    """Items from (a) a lhotse CutSet jsonl(.gz), (b) lhotse recordings + supervisions manifests (either
    file, or their folder), (c) a spokentod dialogue manifest (every turn with audio, both speakers, id
    "<dialogue_id>/<turn index>"). Relative audio paths resolve against the manifest's folder. Strict:
    a missing audio file, an empty text or a segment of a longer recording raises DataError naming each."""
    p = Path(path)
    if p.is_dir():
        pairs = [(r, q) for r in sorted(p.glob("*recordings*.jsonl*"))
                 if (q := _partner(r, "recordings", "supervisions", strict=False))]
        if len(pairs) != 1:
            raise DataError(str(p), message="expected one lhotse recordings+supervisions pair, found "
                            f"{len(pairs)} {[r.name for r, _ in pairs]}")
        return _from_lhotse(p, *pairs[0])
    if not p.is_file():
        raise DataError(str(p), message="does not exist")
    first = _first_record(p)
    if "turns" in first:
        items, problems = [], []
        for d in read_manifest(p):
            for t in (t for t in d.turns if t.audio is not None):
                try:
                    audio = resolve_audio_path(p.parent, t.audio.path)
                except ValueError as e:
                    problems.append(Problem(str(p), d.id, f"turns.{t.index}.audio.path", str(e)))
                    continue
                item = AsrItem(f"{d.id}/{t.index}", str(audio), t.text, t.audio.duration)
                if why := _unusable(item):
                    problems.append(Problem(str(p), d.id, f"turns.{t.index}", why))
                else:
                    items.append(item)
        return _finish(p, items, problems)
    if "supervisions" in first or str(first.get("type", "")).endswith("Cut"):  # {type: MonoCut, ...}
        return _from_lhotse(p, None, None)
    if "sources" in first:
        return _from_lhotse(p, p, _partner(p, "recordings", "supervisions"))
    if "recording_id" in first:
        return _from_lhotse(p, _partner(p, "supervisions", "recordings"), p)
    raise DataError(str(p), "line 1", None,
                    "not a dialogue manifest, lhotse CutSet or lhotse recordings/supervisions manifest")


def _first_record(p: Path) -> dict:
    try:
        opener = gzip.open if p.name.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as f:
            line = next((x for x in f if x.strip()), None)
        obj = json.loads(line) if line is not None else None
    except (OSError, UnicodeDecodeError, EOFError, json.JSONDecodeError) as e:
        raise DataError(str(p), "line 1", None, f"not a JSONL manifest: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(str(p), "line 1", None, "empty file" if obj is None else "expected a JSON object")
    return obj


def _partner(p: Path, mine: str, other: str, strict: bool = True) -> Path | None:
    q = p.with_name(p.name.replace(mine, other))
    if q != p and q.is_file():
        return q
    if strict:
        raise DataError(str(p), message=f"lhotse {mine} manifest without its {other} manifest ({q.name})")
    return None


def _from_lhotse(p: Path, recordings: Path | None, supervisions: Path | None) -> list[AsrItem]:
    try:
        import lhotse  # (imports torch: only when a lhotse manifest is read)
    except ImportError:
        raise SpokenTODError(f"{p}: reading lhotse manifests needs lhotse (pip install lhotse)") from None
    try:  # → (recording, its supervisions, their time offset in the recording, record id)
        if recordings is None:
            groups = [(getattr(c, "recording", None), c.supervisions, getattr(c, "start", 0.0), c.id)
                      for c in lhotse.CutSet.from_file(p)]
        else:
            recs = {r.id: r for r in lhotse.RecordingSet.from_file(recordings)}
            groups = [(recs.get(s.recording_id), [s], 0.0, s.id)
                      for s in lhotse.SupervisionSet.from_file(supervisions)]
    except Exception as e:  # noqa: BLE001 - lhotse's own errors name no file
        raise DataError(str(p), message=f"lhotse cannot read it: {type(e).__name__}: {e}") from None
    items, problems = [], []
    for rec, sups, offset, rid in groups:
        if rec is None or len(rec.sources) != 1 or rec.sources[0].type != "file":
            problems.append(Problem(str(p), rid, "recording", "needs a recording with one file source"))
            continue
        audio = Path(rec.sources[0].source)
        audio = (audio if audio.is_absolute() else p.parent / audio).resolve()
        for s in sups:
            start, end = offset + s.start, offset + s.end
            if start > _WHOLE_TOL_S or end < rec.duration - _WHOLE_TOL_S:
                problems.append(Problem(str(p), s.id, "start", f"covers {start:.2f}-{end:.2f} s of a "
                                        f"{rec.duration:.2f} s recording; cut segments into files first"))
                continue
            item = AsrItem(s.id, str(audio), s.text, s.duration)
            if why := _unusable(item):
                problems.append(Problem(str(p), s.id, None, why))
            else:
                items.append(item)
    return _finish(p, items, problems)


def _unusable(item: AsrItem) -> str | None:
    if not Path(item.audio).is_file():
        return f"audio file {item.audio} does not exist"
    return None if (item.text or "").strip() else "no transcript text"


def _finish(p: Path, items: list[AsrItem], problems: list[Problem]) -> list[AsrItem]:
    if problems:
        raise DataError.many(problems)
    if not items:
        raise DataError(str(p), message="no items with audio")
    return items


# --- domain split (issue 8) ----------------------------------------------------------------------------

def dialogue_domains(d: Dialogue) -> set[str]:
    """The union of the domains (with at least one slot) in the dialogue's user states."""
    return {dom for t in d.user_turns for dom, slots in (t.state or {}).items() if slots}


class DomainSplit(tuple):
    """Unpacks as ``(source_only, target_only, mixed)``; `no_domain` holds the dialogues whose states name
    no domain at all (they belong to no side), so that none disappears silently."""

    def __new__(cls, source: list, target: list, mixed: list, no_domain: list):
        self = super().__new__(cls, (source, target, mixed))
        self.no_domain = no_domain
        return self

    source = property(lambda self: self[0])
    target = property(lambda self: self[1])
    mixed = property(lambda self: self[2])


def split_by_domain(dialogues: Iterable[Dialogue], source: set[str], target: set[str]) -> DomainSplit:
    """Source-only if all of a dialogue's domains are in `source`, target-only if all are in `target`,
    else mixed (which includes dialogues touching a domain in neither set)."""
    source, target = set(source), set(target)
    if source & target:
        raise ValueError(f"source and target domains overlap: {sorted(source & target)}")
    src, tgt, mixed, none = [], [], [], []
    for d in dialogues:
        doms = dialogue_domains(d)
        (none if not doms else src if doms <= source else tgt if doms <= target else mixed).append(d)
    return DomainSplit(src, tgt, mixed, none)
