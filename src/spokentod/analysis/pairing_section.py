"""The report's "gold context vs free-running" section (numbers from analysis/pairing.py): a table per pair
of self − gold differences over all turns and per phase, the per-turn difference curves as a figure, and
the rows as paired_phases.csv and paired_turns.csv. Absent from runs without a pair."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from spokentod.analysis import pairing
from spokentod.analysis.document import Cell, Figure, Note, Section, View
from spokentod.analysis.load import Bench, metric
from spokentod.analysis.plots import _plt, _png, axis_label, scale, system_colors, turn_line
from spokentod.analysis.sections import label, num

_SHORT = {"chitchat": "chat", "transition": "trans", "task": "task"}  # phase names under the R ticks

HOW = ("Each system below ran twice on the same dialogues and seeds: with the gold context (the reference "
       "agent turns before every user turn) and free-running (its own earlier replies fed back instead). Each "
       "cell is the mean over reply slots (dialogue, user turn, seed) of self − gold, with a 95 % percentile "
       "bootstrap CI over dialogues and the number of dialogues under it. Bold: the CI excludes 0; red: "
       "free-running is significantly worse (by the metric's direction). A gap that grows over R1..Rn is "
       "error build-up on the system's own replies; a gap already at R1, where both modes saw the same "
       "context, is the system's run-to-run noise, the floor below which no difference means anything. "
       "Phases: SalesBot's chit-chat → transition → task. A cell over fewer than "
       f"{pairing.MIN_DIALOGUES} dialogues shows the mean difference without an interval (greyed).")


def _diff_cell(r: dict[str, Any]) -> Cell:
    m = metric(r["metric"])
    f, d = (100.0, 1) if m.scale == "rate" else (m.factor, m.digits)
    unit = " pts" if m.scale == "rate" or m.unit == "%" else ""  # a difference of percentages: points
    if not math.isfinite(r["ci_low"]):
        return Cell(num(r["diff"] * f, d, sign=True) + unit, "muted", f"{r['dialogues']} dial.")
    worse = pairing.worse(r)
    text = f"{num(r['diff'] * f, d, sign=True)}{unit} [{num(r['ci_low'] * f, d)}, {num(r['ci_high'] * f, d)}]"
    return Cell(text, "drop" if worse else "sig" if r["significant"] else "", f"{r['dialogues']} dial.")


def _mean_cell(r: dict[str, Any], key: str) -> Cell:
    m = metric(r["metric"])
    f, d = (100.0, 1) if m.scale == "rate" else (m.factor, m.digits)
    return Cell(num(r[key] * f, d) + (" %" if m.unit == "%" or m.scale == "rate" else ""))


def _view(rows: list[dict[str, Any]], names: list[str], phases: list[str], caption: str) -> View:
    by = {(r["metric"], r["phase"]): r for r in rows}
    out = []
    for n in names:
        whole = by.get((n, pairing.ALL))
        if whole is None:
            continue
        out.append([label(n), _mean_cell(whole, "mean_gold"), _mean_cell(whole, "mean_self"),
                    *(_diff_cell(by[(n, p)]) if (n, p) in by else Cell("–", "muted") for p in phases)])
    return View(["metric", "gold", "free-running", *(f"self − gold: {p}" for p in phases)], out, caption)


def figure(rows: list[dict[str, Any]], names: list[str], colors: dict[str, str], ncols: int = 3) -> bytes:
    """One panel per metric: self − gold per R_k with its 95 % CI band, a line per pair; the x ticks name
    the phase most replies of that turn are in."""
    plt = _plt()
    ncols = min(ncols, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.1 * nrows), squeeze=False)
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        series[(r["metric"], r["pair"])].append(r)
    for ax, name in zip(axes.flat, names):
        f = scale(name)
        ticks: dict[int, str] = {}
        for pair, color in colors.items():
            pts = sorted(series.get((name, pair), []), key=lambda r: r["turn"])
            if not pts:
                continue
            turn_line(ax, pts, "diff", f, color, pair)
            ticks.update({p["turn"]: p["phase"] for p in pts})
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(sorted(ticks), [f"R{k}\n{_SHORT.get(ticks[k], ticks[k][:5])}" for k in sorted(ticks)], fontsize=7)
        ax.set_title(f"{axis_label(name)}: self − gold", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    legend: dict[str, Any] = {}  # every pair drawn in any panel
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=min(len(legend), 5),
                   frameon=False, bbox_to_anchor=(0.5, 1.0))
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.7 / w, right=1 - 0.15 / w, bottom=0.75 / h, top=1 - 0.8 / h, wspace=0.3,
                        hspace=0.75 if nrows > 1 else 0.2)
    return _png(fig)


def build(bench: Bench, n_boot: int = 2000) -> tuple[Section, dict[str, list[dict[str, Any]]]] | None:
    """The section and its tables (name → rows), or None when the runs hold no gold/self pair."""
    pairs = pairing.find_pairs(bench)
    if not pairs:
        return None
    tables = {"paired_phases": pairing.per_phase(bench, pairs, n_boot),
              "paired_turns": pairing.per_turn(bench, pairs, n_boot)}
    s = Section("paired", "Gold context vs free-running (paired)", HOW)
    phases = [pairing.ALL, *(p for p in dict.fromkeys(r["phase"] for r in tables["paired_phases"])
                             if p != pairing.ALL)]
    for pair in pairs:
        rows = [r for r in tables["paired_phases"] if r["pair"] == pair.name]
        names = list(dict.fromkeys(r["metric"] for r in rows))
        main = [n for n in names if metric(n).section != "latency" and
                (metric(n).headline or metric(n).section == "judge-free")]
        if not names:
            s.blocks.append(Note(f"{pair.name}: no reply slot has a metric on both sides ({pair.gold}, "
                                 f"{pair.free}).", "warn"))
            continue
        s.blocks.append(_view(rows, main or names, phases, f"{pair.name}: {pair.free} − {pair.gold}"))
        rest = [n for n in names if n not in main]
        if rest and main:
            s.details.append((f"{pair.name}: every other metric", _view(rows, rest, phases, "")))
    turns = tables["paired_turns"]
    drawn = [n for n in dict.fromkeys(r["metric"] for r in turns)
             if metric(n).headline and metric(n).section != "latency"]
    if drawn:
        colors = system_colors([p.name for p in pairs])
        s.blocks.append(Figure("paired_turns", figure(turns, drawn, colors),
                               "Per-turn difference, free-running − gold context, with 95 % bootstrap CIs"))
    return s, tables
