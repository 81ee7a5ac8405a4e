"""Per-reply metrics: what one is, the registry, and the reply object every metric reads.

A metric *group* computes one or more named outputs for one reply (DNSMOS gives four numbers from one
model call). Groups are what `--metrics` selects, what the cache keys on and what gets a version: bump
`version` when a change alters results, and only that group is recomputed on the next `score`.

Each output carries its own display facts (`Output`: label, report section, which direction is better,
unit and scale), which the score command's table and the report read from here: adding a metric is one
module that registers its group, and its test.

Plug-ins (other MOS predictors such as UTMOS or VERSA, where installed) register through the
``spokentod.metrics`` entry-point group: each entry point loads to a `MetricGroup` (or a list of them).
Outside code may also call `register(MetricGroup(...))` before `score_run`.

A metric returns a `MetricResult`; an output it cannot compute is None with a reason in `missing`
(raise `Missing(reason)` to mark every output of the group at once). Missing is never 0.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from spokentod.data.schema import Speaker

# What a metric reads; each named input goes into its cache key, so a change to it recomputes the metric.
NEEDS = ("text", "audio", "transcript", "dialogue", "prior_audio", "record", "judge", "audio_judge")


class Missing(Exception):
    """Every output of the group is missing for this reply, with this reason.

    `cacheable=False` for transient causes (a judge server down): the next `score` tries again."""

    def __init__(self, reason: str, cacheable: bool = True):
        super().__init__(reason)
        self.reason, self.cacheable = reason, cacheable


@dataclass
class MetricResult:
    values: dict[str, float | None]
    missing: dict[str, str] = field(default_factory=dict)
    judge: dict[str, Any] = field(default_factory=dict)  # merged into the record's "judge" block
    cacheable: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"values": self.values, "missing": self.missing, "judge": self.judge}


# Report sections, in report order; every Output names one.
SECTIONS = ("audio quality", "intelligibility", "speech", "judge", "failures", "judge-free", "latency", "other")
AUDIO_SECTIONS = ("audio quality", "intelligibility", "speech")  # the audio side of the report's correlations


@dataclass(frozen=True)
class Output:
    """One number a metric group computes, and how to show it."""

    name: str  # the key in a metric record's "metrics"
    label: str
    section: str  # one of SECTIONS
    better: int  # +1 higher is better, -1 lower is better, 0 neither (length, duration)
    scale: str = "value"  # "judge": 0-100 points; "rate": 0/1 shown in %; "value": anything else
    unit: str = ""
    factor: float = 1.0  # display multiplier (WER 0.05 is shown as 5.0 %)
    digits: int = 2
    headline: bool = False  # one of the few columns `bench score` prints


@dataclass(frozen=True)
class MetricGroup:
    name: str  # group name: --metrics, cache key
    version: str
    display: tuple[Output, ...]  # its outputs, in order, with their display facts
    compute: Callable[[ScoredReply, Any], MetricResult]  # (reply, Resources) → result
    needs: tuple[str, ...] = ("text",)
    spoken_only: bool = False  # needs reply audio: text-only systems get score.NOT_SPOKEN ("not applicable: ...")
    doc: str = ""
    identity: Callable[[], Any] | None = None  # the model behind it (goes into the cache key)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.display)


@dataclass
class ScoredReply:
    """One final result record plus what metrics need around it (dialogue, transcript, earlier audio)."""

    record: dict[str, Any]
    run_dir: Path
    dialogue: Any = None  # data.schema.Dialogue, None when the run's dataset could not be loaded
    turn_ordinal: int | None = None  # 1-based among the dialogue's user turns (R1..Rn)
    spoken: bool = False
    transcript: str | None = None  # standardized ASR transcript (spoken) or the text (text-only)
    transcript_error: str | None = None
    prior_audio: list[Path] = field(default_factory=list)  # this system's earlier reply audio, same dialogue

    system = property(lambda self: self.record["system"])
    dialogue_id = property(lambda self: self.record["dialogue_id"])
    turn = property(lambda self: int(self.record["turn"]))
    seed = property(lambda self: int(self.record.get("seed", 0)))
    text = property(lambda self: self.record.get("text") or "")

    @property
    def audio_path(self) -> Path | None:
        p = self.record.get("audio_path")
        if not p:
            return None
        p = Path(p)
        return p if p.is_absolute() else self.run_dir / p

    def history(self) -> list[Any]:
        """The gold turns before this user turn, and the user turn itself (what the system answered)."""
        if self.dialogue is None:
            raise Missing("dialogue not found (the run's dataset could not be loaded)")
        return list(self.dialogue.turns[: self.turn + 1])

    def gold_reply(self) -> Any:
        """The gold agent turn right after this user turn, or None."""
        if self.dialogue is None:
            raise Missing("dialogue not found (the run's dataset could not be loaded)")
        turns = self.dialogue.turns
        nxt = turns[self.turn + 1] if self.turn + 1 < len(turns) else None
        return nxt if nxt is not None and nxt.speaker == Speaker.agent else None

    def scored_text(self) -> str:
        """What text metrics read: the standardized transcript (spoken systems) or the text."""
        if self.transcript is None:
            raise Missing(self.transcript_error or "no transcript")
        if not self.transcript.strip():
            raise Missing("empty reply (nothing was said)")
        return self.transcript


# ---------------------------------------------------------------- registry

_METRICS: dict[str, MetricGroup] = {}
_LOADED = False


def register(metric: MetricGroup) -> MetricGroup:
    _METRICS[metric.name] = metric
    return metric


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    # Imported here, not at the top: they import this module to register themselves.
    from spokentod.metrics import audio, distillmos, judge, judge_free, judge_free_flags, latency  # noqa: F401

    for ep in entry_points(group="spokentod.metrics"):
        try:
            got = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plug-in must not stop the built-in metrics
            warnings.warn(f"metric plug-in {ep.name!r} failed to load: {type(e).__name__}: {e}", stacklevel=2)
            continue
        for m in got if isinstance(got, (list, tuple)) else [got]:
            if isinstance(m, MetricGroup):
                _METRICS.setdefault(m.name, m)


def available() -> dict[str, MetricGroup]:
    _load()
    return dict(_METRICS)


def resolve(names: list[str] | str | None, with_judge: bool = False, with_audio_judge: bool = False) -> list[MetricGroup]:
    """Metric groups for `names` (group names or output names, comma-separated allowed). None = every
    group whose requirements are configured (judge groups only with a judge)."""
    metrics = available()
    if names is None:
        return [m for m in metrics.values() if ("judge" not in m.needs or with_judge)
                and ("audio_judge" not in m.needs or with_audio_judge)]
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    out: list[MetricGroup] = []
    for raw in names:
        n = raw.strip()
        if not n:
            continue
        group = metrics.get(n) or next((m for m in metrics.values() if n in m.outputs), None)
        if group is None:
            outputs = sorted({o for m in metrics.values() for o in m.outputs})
            raise KeyError(f"unknown metric {n!r}; groups: {', '.join(sorted(metrics))}; outputs: {', '.join(outputs)}")
        if group not in out:
            out.append(group)
    return out


def catalog() -> dict[str, Output]:
    """Every registered output's display facts, in registration order."""
    return {o.name: o for g in available().values() for o in g.display}


def headline() -> tuple[str, ...]:
    """The outputs `bench score` prints a column for."""
    return tuple(name for name, o in catalog().items() if o.headline)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()
