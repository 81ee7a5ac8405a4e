"""Corpus statistics: the numbers behind the reference paper's Tables 3 and 4.

Dialogue and turn counts, turns per dialogue, intent distribution, and for multi-phase corpora the
transition position and chit-chat length, overall and by intent. Standard deviations are population
SDs (ddof=0), so a single dialogue gives 0 rather than an error.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from rich.console import Group
from rich.table import Table

# Dialogues without an intent get the same key as the sampler's stratum.
from spokentod.data.sample import NO_INTENT
from spokentod.data.schema import Dialogue, Phase


def _summary(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    return {"mean": statistics.fmean(xs), "sd": statistics.pstdev(xs), "min": min(xs), "max": max(xs)}


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _sd(xs: list[float]) -> float | None:
    return statistics.pstdev(xs) if xs else None


def intent_of(d: Dialogue) -> str:
    return d.intent.type if d.intent is not None else NO_INTENT


def chitchat_length(d: Dialogue) -> int | None:
    """Chit-chat turns before the transition; None when the dialogue has no transition."""
    t = d.transition_index
    if t is None:
        return None
    return sum(1 for x in d.turns[:t] if x.phase == Phase.chitchat)


def corpus_stats(dialogues: Iterable[Dialogue]) -> dict[str, Any]:
    """JSON-serialisable statistics of a list of dialogues (see the module docstring)."""
    ds = list(dialogues)
    turns = [t for d in ds for t in d.turns]
    s: dict[str, Any] = {
        "dialogues": len(ds),
        "turns_total": len(turns),
        "turns": _summary([len(d.turns) for d in ds]),
        "user_turns": _summary([len(d.user_turns) for d in ds]),
        "words_per_turn": _mean([len(t.text.split()) for t in turns]),
        "intents": dict(Counter(intent_of(d) for d in ds).most_common()),
        "sources": dict(Counter(d.source for d in ds).most_common()),
        "with_state": sum(any(t.state is not None for t in d.turns) for d in ds),
        "with_audio": sum(any(t.audio is not None for t in d.turns) for d in ds),
    }
    if s["with_audio"]:
        s["audio_hours"] = sum(t.audio.duration for t in turns if t.audio is not None) / 3600

    multiphase = any(t.phase is not None for t in turns)
    s["multiphase"] = multiphase
    if multiphase:
        positions = [d.transition_index for d in ds if d.transition_index is not None]
        chitchat = [c for d in ds if (c := chitchat_length(d)) is not None]
        s["with_transition"] = len(positions)
        s["transition_position_mean"] = _mean(positions)
        s["transition_position_sd"] = _sd(positions)
        s["chitchat_length_mean"] = _mean(chitchat)
        s["chitchat_length_sd"] = _sd(chitchat)
        s["phase_turns"] = dict(Counter(t.phase.value if t.phase else "none" for t in turns).most_common())

    groups: dict[str, list[Dialogue]] = defaultdict(list)
    for d in ds:
        groups[intent_of(d)].append(d)
    by_intent = {}
    for name in s["intents"]:  # most common first, like Table 4
        g = groups[name]
        row: dict[str, Any] = {"dialogues": len(g), "turns_mean": _mean([len(d.turns) for d in g])}
        if multiphase:
            row["transition_position_mean"] = _mean([t for d in g if (t := d.transition_index) is not None])
            row["chitchat_length_mean"] = _mean([c for d in g if (c := chitchat_length(d)) is not None])
        by_intent[name] = row
    s["by_intent"] = by_intent
    return s


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.2f}"
    return str(x)


def _fmt_summary(x: dict[str, float] | None) -> str:
    if x is None:
        return "-"
    return f"{x['mean']:.2f} ± {x['sd']:.2f} (min {x['min']:g}, max {x['max']:g})"


def render_stats(s: dict[str, Any]) -> Group:
    """A rich renderable: overview, phases (multi-phase only) and per-intent tables."""
    over = Table(title="Corpus", show_header=False)
    over.add_column("metric", style="bold")
    over.add_column("value", justify="right")
    over.add_row("dialogues", _fmt(s["dialogues"]))
    over.add_row("turns (total)", _fmt(s.get("turns_total")))
    over.add_row("turns per dialogue", _fmt_summary(s["turns"]))
    over.add_row("user turns per dialogue", _fmt_summary(s["user_turns"]))
    over.add_row("words per turn", _fmt(s["words_per_turn"]))
    over.add_row("sources", ", ".join(f"{k} {v}" for k, v in s["sources"].items()) or "-")
    over.add_row("dialogues with state", _fmt(s["with_state"]))
    over.add_row("dialogues with audio", _fmt(s["with_audio"]))
    if "audio_hours" in s:
        over.add_row("audio hours", _fmt(s["audio_hours"]))
    parts: list[Table] = [over]

    if s.get("multiphase"):
        over.add_row("dialogues with a transition", _fmt(s["with_transition"]))
        for label, key in (("transition position", "transition_position"),
                           ("chit-chat length", "chitchat_length")):
            over.add_row(label, f"{_fmt(s[key + '_mean'])} ± {_fmt(s[key + '_sd'])}")
        phases = Table(title="Turns by phase")
        phases.add_column("phase")
        phases.add_column("turns", justify="right")
        for k, v in s["phase_turns"].items():
            phases.add_row(k, str(v))
        parts.append(phases)

    intents = Table(title="By intent")
    intents.add_column("intent", no_wrap=True)
    intents.add_column("dialogues", justify="right")
    intents.add_column("turns (mean)", justify="right")
    if s.get("multiphase"):
        intents.add_column("transition pos. (mean)", justify="right")
        intents.add_column("chit-chat length (mean)", justify="right")
    for name, row in s["by_intent"].items():
        cells = [name, _fmt(row["dialogues"]), _fmt(row["turns_mean"])]
        if s.get("multiphase"):
            cells += [_fmt(row["transition_position_mean"]), _fmt(row["chitchat_length_mean"])]
        intents.add_row(*cells)
    parts.append(intents)
    return Group(*parts)
