"""The bench report (``spokentod bench report DIR [DIR...]``): report.md, a self-contained report.html
and one CSV per table.

The report is built as a list of sections, each a title, a short "how to read this", and blocks (tables,
figures, notes); the same sections render to Markdown (figures as PNG files beside it) and to HTML
(figures embedded as base64 PNG, so the one file can be mailed or attached). Numbers come from
aggregate.py; CSVs hold them unrounded and tidy (one row per system x metric x ...), for spreadsheets.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spokentod import __version__
from spokentod.analysis import aggregate as agg
from spokentod.analysis import plots
from spokentod.analysis.aggregate import Bench, ReportError, metric
from spokentod.metrics.judge import FAILURES
from spokentod.metrics.registry import SECTIONS

HEADLINE = agg.TABLE1  # per-turn tables printed in full (every metric is in per_turn.csv and the HTML)


# ---------------------------------------------------------------- document model


@dataclass
class Cell:
    text: str
    cls: str = ""  # "drop" (flagged), "sig" (CI excludes 0), "muted", "wrap" (long text)
    sub: str = ""  # small print under the value (n)


@dataclass
class View:
    columns: list[str]
    rows: list[list[Cell | str]]
    caption: str = ""
    lead: int = 1  # leading label columns: left-aligned; a system name there gets its colour swatch


@dataclass
class Figure:
    name: str  # file stem
    png: bytes
    alt: str


@dataclass
class Note:
    text: str
    kind: str = "note"  # "note" | "warn"


@dataclass
class Section:
    id: str
    title: str
    how: str
    blocks: list[View | Figure | Note] = field(default_factory=list)
    details: list[tuple[str, View]] = field(default_factory=list)  # long tables, folded in HTML, CSV-only in MD


# ---------------------------------------------------------------- number formatting


def num(x: float | None, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "+∞" if x > 0 else "−∞"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def est_cell(row: dict[str, Any], name: str, key: str = "mean", lo: str = "ci_low", hi: str = "ci_high",
             n: str = "n") -> Cell:
    """'72.3 ± 4.1' (symmetric t CI) or '12.0 % [8.1, 17.3]' (Wilson, asymmetric), n underneath."""
    m = metric(name)
    f, d = (100.0, 1) if m.scale == "rate" else (m.factor, m.digits)
    if not row.get(n):
        return Cell("–", "muted", "n=0")
    mean, low, high = row[key] * f, row[lo] * f, row[hi] * f
    unit = " %" if m.unit == "%" else ""
    if not math.isfinite(low):
        text = f"{num(mean, d)}{unit}"
    elif m.scale == "rate":
        text = f"{num(mean, d)}{unit} [{num(low, d)}, {num(high, d)}]"
    else:
        text = f"{num(mean, d)} ± {num((high - low) / 2, d)}{unit}"
    return Cell(text, sub=f"n={row[n]}")


def label(name: str) -> str:
    m = metric(name)
    unit = "%" if m.scale == "rate" else m.unit
    return f"{m.label} ({unit})" if unit else m.label


# ---------------------------------------------------------------- sections


def build(bench: Bench) -> tuple[list[Section], dict[str, list[dict[str, Any]]]]:
    """The report's sections and the tidy tables behind them (name → rows, written as <name>.csv)."""
    colors = plots.system_colors(bench.systems)
    names = bench.metrics
    t: dict[str, list[dict[str, Any]]] = {
        "coverage": agg.coverage(bench), "system_table": agg.system_table(bench),
        "failures": agg.failure_table(bench), "primary_failures": agg.primary_failures(bench),
        "per_turn": agg.per_turn(bench), "per_phase": agg.per_phase(bench), "latency": agg.latency(bench),
        "missing": agg.missing_counts(bench), "missing_replies": agg.missing_replies(bench),
        "errors": agg.error_counts(bench),
        "judge_agreement": agg.judge_agreement(bench)}
    audio, dialogue = agg.correlation_metrics(bench)
    t["correlations"] = agg.correlations(bench, audio + dialogue, [None, *bench.systems])
    diff_metrics = [n for n in names if metric(n).scale != "rate" and
                    (metric(n).section != "latency" or n in ("lat_total", "rtf_tts"))]
    t["differences"] = agg.pairwise(bench, diff_metrics)

    sections = [
        _overview(bench, t),
        _system_section(bench, t, names),
        _failure_section(bench, t, colors),
        _turn_section(bench, t, names, colors),
        _phase_section(bench, t, names),
        _correlation_section(t, audio, dialogue),
        _difference_section(t),
        _latency_section(t),
        _missing_section(bench, t),
        _method_section(),
    ]
    return sections, t


def _overview(bench: Bench, t: dict) -> Section:
    s = Section("overview", "Runs and coverage",
                "One row per system: replies it produced (last attempt per turn), how many failed (errors), how "
                "many were scored, and how many got a judge verdict. Every mean below uses only the replies "
                "that have that metric; its n says how many.")
    for run in bench.runs:
        meta = run.meta
        status = meta.get("status", "?")
        judge = run.judge.name or "not recorded"
        s.blocks.append(Note(f"Run {run.name} ({run.path}): status {status}; judge: {judge}"
                             + (" — WEAK" if run.judge.weak else "") + "."))
        if status not in ("finished", "merged", "?"):
            s.blocks.append(Note(f"Run {run.name} is {status}: its numbers cover only the turns done so far.",
                                 "warn"))
    cols = ["system", "replies", "errors", "scored", "not scored", "judged", "judge missing"]
    s.blocks.append(View(cols, [[r["system"], *(str(r[k]) for k in ("replies", "errors", "scored", "not_scored",
                                                                     "judged", "judge_missing"))]
                                for r in t["coverage"]]))
    return s


def _system_section(bench: Bench, t: dict, names: list[str]) -> Section:
    s = Section("systems", "Systems (Table 1)",
                "Mean ± half-width of the 95 % confidence interval, n replies underneath. Audio quality: DNSMOS "
                "overall (1–5, higher is better); intelligibility: WER of the standardized transcript against "
                "the reply text (lower is better); naturalness and consistency: LLM judge, 0–100. Rates (failure "
                "presence) show a Wilson interval in brackets. The second table has every metric.")
    by = {(r["system"], r["metric"]): r for r in t["system_table"]}
    head = [n for n in agg.TABLE1 if n in names]
    if head:
        s.blocks.append(View(["system", *(label(n) for n in head)],
                             [[sys, *(est_cell(by[(sys, n)], n) for n in head)] for sys in bench.systems],
                             "Seed Table 1 metrics"))
    s.blocks.append(View(["group", "metric", *bench.systems],
                         [[metric(n).section if i == 0 or metric(names[i - 1]).section != metric(n).section else "",
                           label(n), *(est_cell(by[(sys, n)], n) for sys in bench.systems)]
                          for i, n in enumerate(names)], "All metrics", lead=2))
    return s


def _failure_section(bench: Bench, t: dict, colors: dict[str, str]) -> Section:
    s = Section("failures", "Failure taxonomy (Table 2)",
                "For each failure type the judge gives a severity 0–100 (0 none, 1–33 mild, 34–66 moderate, "
                "67–100 severe) and says whether it is present. Mean severity is over all judged replies; "
                "'when present' only over replies where the judge said present; the presence rate is the share "
                "of judged replies with it (the seed counted presence only). 'Primary' counts how often the judge "
                "named it the reply's main failure.")
    if not any(r["n"] for r in t["failures"]):
        s.blocks.append(Note("No failure-taxonomy verdicts in these runs" + (
            " (every judgement is missing: see 'Missing judgements and errors')." if t["failures"] else ".")))
        return s
    rows = [[r["system"], r["failure"].replace("_", " "),
             est_cell(r, "fail_x_severity", "severity", "severity_ci_low", "severity_ci_high"),
             Cell(num(r["severity_when_present"], 1)),
             est_cell({**r, "n": r["n_rate"]}, "fail_x_present", "presence_rate", "rate_ci_low", "rate_ci_high"),
             Cell(f"{r['n_present']}/{r['n_rate']}"), Cell(str(r["primary"]))]
            for r in sorted(t["failures"], key=lambda r: bench.systems.index(r["system"]))]
    s.blocks.append(View(["system", "failure", "mean severity", "severity when present", "presence rate (%)",
                          "present / judged", "primary"], rows, lead=2))
    s.blocks.append(Figure("failures", plots.failure_figure(t["failures"], colors),
                           "Mean severity and presence rate per failure type and system"))
    seen = {r["primary_failure"] for r in t["primary_failures"]}
    order = ["none", *FAILURES, *sorted(seen - {"none", "(not given)", "(not judged)", *FAILURES}),
             "(not given)", "(not judged)"]
    kinds = [k for k in order if k in seen]
    counts = {(r["system"], r["primary_failure"]): r["count"] for r in t["primary_failures"]}
    s.blocks.append(View(["system", *kinds], [[sys, *(str(counts.get((sys, k), 0)) for k in kinds)]
                                              for sys in bench.systems], "Primary failure counts"))
    return s


def _change(r: dict[str, Any]) -> str:
    if r["change_unit"] == "points":
        return num(r["change"], 1, sign=True) + " pts"
    return num(100 * r["change"], 0, sign=True) + " %"


def _turn_view(rows: list[dict[str, Any]], name: str, systems: list[str]) -> View:
    turns = sorted({r["turn"] for r in rows})
    by = {(r["system"], r["turn"]): r for r in rows}
    out = []
    for sys in [s for s in systems if any(r["system"] == s for r in rows)]:
        cells: list[Cell | str] = [sys]
        for k in turns:
            r = by.get((sys, k))
            if r is None:
                cells.append(Cell("–", "muted"))
                continue
            c = est_cell(r, name)
            if r["drop"]:
                c = Cell("▼ " + c.text, "drop", f"{c.sub}, {_change(r)}")
            cells.append(c)
        out.append(cells)
    return View(["system", *(f"R{k}" for k in turns)], out, label(name))


def _turn_section(bench: Bench, t: dict, names: list[str], colors: dict[str, str]) -> Section:
    s = Section("turns", "Per-turn curves (Figure 2, Table 5)",
                "R1..Rn is the position of the user turn in its dialogue. Each point is the mean over the "
                "dialogues reaching that turn (n underneath; later turns have fewer dialogues, so wider bands). "
                f"▼ marks a drop from the previous turn: more than {agg.DROP_POINTS:.0f} points on the 0–100 judge "
                f"scale or on rates in %, or more than {agg.DROP_RELATIVE:.0%} of the previous mean for other "
                "metrics, always in the worse direction (naturalness falling, WER or severity rising; for length "
                "or duration, any fall).")
    rows = t["per_turn"]
    drops = [r for r in rows if r["drop"]]
    if drops:
        prev = {(r["system"], r["metric"], r["turn"]): r for r in rows}
        view = []
        for r in drops:
            p = prev[(r["system"], r["metric"], r["turn"] - 1)]
            if not (math.isfinite(p["ci_low"]) and math.isfinite(r["ci_low"])):
                overlap = Cell("–", "muted")  # n = 1 on a side: no interval to compare
            elif r["ci_low"] <= p["ci_high"] and p["ci_low"] <= r["ci_high"]:
                overlap = Cell("yes", "muted")
            else:
                overlap = Cell("no", "sig")
            view.append([r["system"], label(r["metric"]), f"R{r['turn'] - 1} → R{r['turn']}",
                         Cell(_change(r), "drop"), est_cell(p, r["metric"]), est_cell(r, r["metric"]), overlap])
        s.blocks.append(View(["system", "metric", "turns", "change", "before", "after", "CIs overlap"], view,
                             "Flagged drops (overlapping CIs: the drop may be noise)", lead=3))
    else:
        s.blocks.append(Note("No drops flagged."))
    for group in SECTIONS:
        group_names = [n for n in names if metric(n).section == group and any(r["metric"] == n for r in rows)]
        if group_names:
            s.blocks.append(Figure(f"per_turn_{group.replace(' ', '_').replace('-', '_')}",
                                   plots.per_turn_figure(rows, group_names, colors), f"Per-turn means: {group}"))
    for n in names:
        mine = [r for r in rows if r["metric"] == n]
        if not mine:
            continue
        if n in HEADLINE:
            s.blocks.append(_turn_view(mine, n, bench.systems))
        else:
            s.details.append((label(n), _turn_view(mine, n, bench.systems)))
    return s


def _phase_section(bench: Bench, t: dict, names: list[str]) -> Section:
    s = Section("phases", "Per phase (chit-chat, transition, task)",
                "SalesBot dialogues move from chit-chat through a transition to the task; the seed never "
                "split its numbers by phase. Each cell is the mean over the replies to user turns of that phase.")
    phases = agg.phases(bench)
    by = {(r["system"], r["metric"], r["phase"]): r for r in t["per_phase"]}
    rows = []
    for n in names:
        first = True
        for sys in bench.systems:
            if any(by[(sys, n, p)]["n"] for p in phases):  # a system without the metric gets no row
                rows.append([label(n) if first else "", sys, *(est_cell(by[(sys, n, p)], n) for p in phases)])
                first = False
    s.blocks.append(View(["metric", "system", *phases], rows, lead=2))
    return s


def _correlation_section(t: dict, audio: list[str], dialogue: list[str]) -> Section:
    s = Section("correlations", "Correlations between audio and dialogue metrics (Figure 3)",
                "Pearson r over replies that have both metrics, all systems pooled (per-system values are in "
                "correlations.csv; pooling mixes differences between systems into the correlation). 95 % CI by "
                "Fisher z. In the heatmap, bold values have a CI that excludes 0; the black lines separate "
                "audio-side metrics (top/left) from dialogue-side ones.")
    names = audio + dialogue
    if len(names) < 2:
        s.blocks.append(Note("Not enough varying metrics to correlate."))
        return s
    s.blocks.append(Figure("correlations", plots.heatmap_figure(t["correlations"], names, len(audio)),
                           "Correlation heatmap"))
    pooled = {frozenset((r["metric_x"], r["metric_y"])): r for r in t["correlations"] if r["scope"] == "all"}
    if audio and dialogue:
        s.blocks.append(View(["dialogue metric ↓ / audio metric →", *(label(a) for a in audio)],
                             [[label(d), *(_r_cell(pooled[frozenset((a, d))]) for a in audio)] for d in dialogue],
                             "Audio × dialogue metrics (pooled): r, its 95 % CI and n"))
    if t["judge_agreement"]:
        s.blocks.append(View(["judge-free metric", "judge metric", "r", "95 % CI", "n"],
                             [[label(r["judge_free"]), label(r["judge_metric"]), _r_cell(r, ci=False),
                               f"[{num(r['ci_low'])}, {num(r['ci_high'])}]", str(r["n"])]
                              for r in t["judge_agreement"]],
                             "How the judge-free metrics agree with the judge", lead=2))
    return s


def _r_cell(r: dict[str, Any], ci: bool = True) -> Cell:
    sig = math.isfinite(r["ci_low"]) and (r["ci_low"] > 0 or r["ci_high"] < 0)
    return Cell(num(r["r"]), "sig" if sig else "", f"[{num(r['ci_low'])}, {num(r['ci_high'])}] n={r['n']}" if ci else "")


def _difference_section(t: dict) -> Section:
    s = Section("differences", "System differences (bootstrap)",
                "Mean of system A minus mean of system B, with a 95 % percentile bootstrap interval that "
                "resamples whole dialogues (2000 resamples; paired on the dialogues both systems ran, so a hard "
                "dialogue counts against both). Bold: the interval excludes 0. p is the two-sided bootstrap p. "
                "Many comparisons are shown: expect about 1 in 20 to exclude 0 by chance.")
    if not t["differences"]:
        s.blocks.append(Note("Only one system: nothing to compare."))
        return s
    rows = []
    for r in t["differences"]:
        m = metric(r["metric"])
        f, d = m.factor, m.digits
        diff = Cell(num(r["diff"] * f, d, sign=True), "sig" if r["significant"] else "")
        rows.append([label(r["metric"]), f"{r['system_a']} − {r['system_b']}", num(r["mean_a"] * f, d),
                     num(r["mean_b"] * f, d), diff, f"[{num(r['ci_low'] * f, d)}, {num(r['ci_high'] * f, d)}]",
                     "<0.001" if r["p"] == 0 else num(r["p"], 3), f"{r['dialogues']}{'' if r['paired'] else ' (unpaired)'}"])
    s.blocks.append(View(["metric", "A − B", "mean A", "mean B", "difference", "95 % CI", "p", "dialogues"], rows,
                         lead=2))
    return s


def _latency_section(t: dict) -> Section:
    s = Section("latency", "Latency",
                "Seconds per reply for each stage (ASR, LLM time to first token and total, TTS, first audio, end "
                "to end) and the TTS real-time factor (synthesis time / audio duration; below 1 is faster than "
                "real time). p50 is the median, p90 the time 9 in 10 replies beat.")
    if not t["latency"]:
        s.blocks.append(Note("No latency metrics in these runs."))
        return s
    s.blocks.append(View(["system", "stage", "mean", "p50", "p90", "n"], lead=2, rows=
                         [[r["system"], label(r["stage"]), num(r["mean"], 3), num(r["p50"], 3), num(r["p90"], 3),
                           str(r["n"])] for r in t["latency"]]))
    return s


def _missing_section(bench: Bench, t: dict) -> Section:
    s = Section("missing", "Missing judgements and errors",
                "A metric that could not be computed (a judge reply that was prose or truncated JSON, a score "
                "out of range, silent audio, a failed reply...) is missing: it is left out of every mean and "
                "counted here, never scored 0. Reasons are grouped by their first words; missing.csv has them in "
                "full. Errors are replies the system itself failed to produce.")
    if t["missing_replies"]:
        s.blocks.append(View(["system", "metric group", "reason", "replies", "metrics"],
                             [[r["system"], r["group"], r["reason"], str(r["replies"]),
                               Cell(", ".join(label(m) for m in r["metrics"].split()), "wrap")]
                              for r in t["missing_replies"]], "Replies missing a metric, by reason", lead=3))
    else:
        s.blocks.append(Note("No missing metric values."))
    if t["errors"]:
        s.blocks.append(View(["system", "reason", "failed replies"],
                             [[r["system"], r["reason"], str(r["count"])] for r in t["errors"]], "Errors", lead=2))
    else:
        s.blocks.append(Note("No failed replies."))
    return s


def _method_section() -> Section:
    return Section("method", "How these numbers are computed", (
        "Means use every reply that has the metric (nulls are missing, never zeros). 95 % CIs: Student t for "
        "means (this treats replies as independent; replies of one dialogue are correlated, so these are somewhat "
        "narrow), Wilson for rates, Fisher z for Pearson r, and a dialogue-level percentile bootstrap for system "
        "differences. Text metrics are computed on the standardized transcript of each system's audio (one ASR "
        "for all systems); the text-only system is scored on its text."))


# ---------------------------------------------------------------- rendering


def _text(c: Cell | str) -> str:
    return c.text if isinstance(c, Cell) else c


def _md_table(v: View) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    def cell(c: Cell | str) -> str:
        if not isinstance(c, Cell):
            return esc(c)
        text = f"**{esc(c.text)}**" if c.cls in ("drop", "sig") else esc(c.text)
        return f"{text} ({esc(c.sub)})" if c.sub else text

    def left(i: int) -> bool:
        return any(isinstance(row[i], Cell) and row[i].cls == "wrap" for row in v.rows[:1])

    lines = [f"**{v.caption}**", ""] if v.caption else []
    lines += ["| " + " | ".join(esc(c) for c in v.columns) + " |",
              "|" + "|".join("---" if i < v.lead or left(i) else "---:" for i in range(len(v.columns))) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in v.rows]
    return "\n".join(lines)


def render_md(sections: list[Section], header: list[str], banner: str | None, figures: dict[str, str]) -> str:
    out = ["# spokentod bench report", "", *header, ""]
    if banner:
        out += [f"> **⚠ {banner}**", ""]
    for s in sections:
        out += [f"## {s.title}", "", f"*How to read this:* {s.how}", ""]
        for b in s.blocks:
            if isinstance(b, View):
                out += [_md_table(b), ""]
            elif isinstance(b, Figure):
                out += [f"![{b.alt}]({figures[b.name]})", ""]
            else:
                out += [("> **Warning:** " if b.kind == "warn" else "") + b.text, ""]
        if s.details:
            out += ["Per-turn tables for the other metrics: per_turn.csv (and report.html).", ""]
    return "\n".join(out)


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:24px 32px 64px}
h1{margin:0 0 4px}h2{margin-top:40px;border-bottom:2px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px}
.banner{background:#fde8e8;border:2px solid #d62728;color:#7a1010;padding:12px 16px;border-radius:6px;margin:16px 0;
font-weight:600}
.how{background:#eef4fb;border-left:4px solid #1f77b4;padding:8px 12px;font-size:14px;color:#234}
.note{font-size:14px;color:#333}.warn{color:#8a4b00;background:#fff4e0;padding:6px 10px;border-radius:4px}
nav ol{columns:2;font-size:14px}
.scroll{max-height:70vh;overflow:auto;border:1px solid #ddd;border-radius:4px;margin:8px 0 20px;background:#fff}
table{border-collapse:separate;border-spacing:0;font-size:13px;width:100%}
caption{caption-side:top;text-align:left;font-weight:600;padding:6px 8px}
th{position:sticky;top:0;background:#f0f0f0;z-index:1;text-align:right;padding:6px 8px;border-bottom:1px solid #bbb;
white-space:nowrap}
td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th:first-child,td:first-child,td.txt,th.txt{text-align:left}
td.wrap{white-space:normal;text-align:left;min-width:260px;color:#555}
tr:hover td{background:#f7f9fc}
td small{display:block;color:#888;font-size:11px}
td.drop{background:#fde8e8;color:#a01010;font-weight:600}td.sig{font-weight:700}td.muted{color:#aaa}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:middle}
figure{margin:12px 0 24px}figure img{max-width:100%;height:auto;border:1px solid #eee;background:#fff}
figcaption{font-size:13px;color:#555}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
"""

# Marks each <img> with whether it decoded (naturalWidth > 0): the browser test reads it from the DOM dump,
# and a reader whose viewer blocks data: URIs sees a message instead of silent blanks.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img'), ok = 0;
  imgs.forEach(function (i) { var r = i.complete && i.naturalWidth > 0; i.dataset.rendered = r ? 'yes' : 'no';
    if (r) ok++; });
  document.body.dataset.images = ok + '/' + imgs.length;
});
"""


def _html_table(v: View, colors: dict[str, str]) -> str:
    e = html.escape
    txt = ' class="txt"'
    head = "".join(f"<th{txt if i < v.lead else ''}>{e(c)}</th>" for i, c in enumerate(v.columns))
    body = []
    for row in v.rows:
        tds = []
        for i, c in enumerate(row):
            c = c if isinstance(c, Cell) else Cell(c)
            cls = " ".join(x for x in (c.cls, "txt" if i < v.lead else "") if x)
            sw = (f'<span class="sw" style="background:{colors[c.text]}"></span>'
                  if i < v.lead and c.text in colors else "")
            sub = f"<small>{e(c.sub)}</small>" if c.sub else ""
            attr = f' class="{cls}"' if cls else ""
            tds.append(f"<td{attr}>{sw}{e(c.text)}{sub}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    cap = f"<caption>{e(v.caption)}</caption>" if v.caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def render_html(sections: list[Section], header: list[str], banner: str | None, colors: dict[str, str]) -> str:
    e = html.escape
    parts = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
             "<meta name=viewport content='width=device-width,initial-scale=1'>",
             f"<title>spokentod bench report</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>",
             "<body><main><h1>spokentod bench report</h1>",
             *(f'<div class="meta">{e(h)}</div>' for h in header)]
    if banner:
        parts.append(f'<div class="banner" id="weak-judge">⚠ {e(banner)}</div>')
    parts.append("<nav><ol>" + "".join(f'<li><a href="#{s.id}">{e(s.title)}</a></li>' for s in sections)
                 + "</ol></nav>")
    for s in sections:
        parts += [f'<section id="{s.id}"><h2>{e(s.title)}</h2>',
                  f'<p class="how"><b>How to read this:</b> {e(s.how)}</p>']
        for b in s.blocks:
            if isinstance(b, View):
                parts.append(_html_table(b, colors))
            elif isinstance(b, Figure):
                data = base64.b64encode(b.png).decode("ascii")
                parts.append(f'<figure><img alt="{e(b.alt)}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{e(b.alt)}</figcaption></figure>")
            else:
                parts.append(f'<p class="{b.kind}">{e(b.text)}</p>')
        for title, v in s.details:
            parts.append(f"<details><summary>{e(title)}</summary>{_html_table(v, colors)}</details>")
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------- files


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Tidy CSV; NaN/None are written as empty cells (missing, not zero), floats to 6 significant digits."""
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def val(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return float(f"{v:.6g}") if isinstance(v, float) else v

    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols or ["empty"])
        w.writeheader()
        w.writerows({k: val(r.get(k)) for k in cols} for r in rows)


def weak_banner(bench: Bench) -> str | None:
    weak = [r for r in bench.runs if r.judge.weak]
    if not weak:
        return None
    who = "; ".join(f"run {r.name}: {r.judge.name or 'judge'} ({r.judge.why})" for r in weak)
    return ("Judge too weak to trust — naturalness, consistency and the failure taxonomy below only exercise the "
            f"pipeline; draw no conclusions from them. {who}.")


def write_report(run_dirs: list[Path], out: Path | None = None) -> dict[str, Path]:
    """Write report.md, report.html, one CSV per table and figures/*.png into `out` (default: DIR/report for
    one run, ./report for several). Returns {file name relative to out: path}. Raises ReportError."""
    if not run_dirs:
        raise ReportError("no run directory given")
    bench = agg.load_bench(run_dirs)
    if not bench.replies:
        raise ReportError("the metrics files hold no records: nothing to report")
    out = Path(out) if out else (Path(run_dirs[0]) / "report" if len(run_dirs) == 1 else Path("report"))
    (out / "figures").mkdir(parents=True, exist_ok=True)
    sections, tables = build(bench)
    written: dict[str, Path] = {}
    for name, rows in tables.items():
        written[f"{name}.csv"] = out / f"{name}.csv"
        write_csv(written[f"{name}.csv"], rows)
    figures = {}
    for b in (b for s in sections for b in s.blocks if isinstance(b, Figure)):
        rel = f"figures/{b.name}.png"
        (out / rel).write_bytes(b.png)
        written[rel], figures[b.name] = out / rel, rel
    header = [f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} by spokentod {__version__}.",
              "Runs: " + ", ".join(str(r.path) for r in bench.runs) + ".",
              f"Systems: {', '.join(bench.systems)}; {len(bench.replies)} scored replies."]
    banner = weak_banner(bench)
    written["report.md"] = out / "report.md"
    written["report.md"].write_text(render_md(sections, header, banner, figures), encoding="utf-8")
    written["report.html"] = out / "report.html"
    written["report.html"].write_text(render_html(sections, header, banner, plots.system_colors(bench.systems)),
                                      encoding="utf-8")
    return written
