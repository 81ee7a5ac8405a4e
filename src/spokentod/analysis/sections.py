"""The report's sections: for each, a title, a short "how to read this", and the tables, figures and notes
built from aggregate.py's numbers (`build`)."""

from __future__ import annotations

import math
from typing import Any

from spokentod.analysis import aggregate as agg
from spokentod.analysis import plots
from spokentod.analysis.document import Cell, Figure, Note, Section, View
from spokentod.analysis.judge_validation import report_section
from spokentod.analysis.load import Bench, metric
from spokentod.metrics.judge_parse import FAILURES
from spokentod.metrics.registry import SECTIONS

TABLE1 = ("dnsmos_ovrl", "wer", "naturalness", "consistency")  # the reference paper's Table 1 columns
HEADLINE = TABLE1  # per-turn tables printed in full (every metric is in per_turn.csv and the HTML)


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
        "errors": agg.error_counts(bench), "judge_parse": agg.judge_parse(bench),
        "judge_agreement": agg.judge_agreement(bench)}
    audio, dialogue = agg.correlation_metrics(bench)
    t["correlations"] = agg.correlations(bench, audio + dialogue, [None, *bench.systems])
    diff_metrics = [n for n in names if metric(n).scale != "rate" and
                    (metric(n).section != "latency" or n in ("lat_total", "rtf_tts"))]
    t["differences"] = agg.pairwise(bench, diff_metrics)

    sections = [
        _overview(bench, t),
        report_section(bench),
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
    if t["judge_parse"]:
        s.blocks.append(View(["system", "judge prompt", "judge replies", "parsed as-is", "repaired", "unparsed"],
                             [[r["system"], r["prompt"], str(r["replies"]),
                               *(f"{r[k]} ({100 * r[k + '_rate']:.0f} %)" for k in ("as_is", "repaired", "failed"))]
                              for r in t["judge_parse"]],
                             "Judge replies: valid JSON as-is, repaired (fenced, trailing commas, truncated...), or "
                             "unparsed (missing, never 0)", lead=2))
    return s


def _system_section(bench: Bench, t: dict, names: list[str]) -> Section:
    s = Section("systems", "Systems (Table 1)",
                "Mean ± half-width of the 95 % confidence interval, n replies underneath. Audio quality: DNSMOS "
                "overall (1–5, higher is better); intelligibility: WER of the standardized transcript against "
                "the reply text (lower is better); naturalness and consistency: LLM judge, 0–100. Rates (failure "
                "presence) show a Wilson interval in brackets. The second table has every metric.")
    by = {(r["system"], r["metric"]): r for r in t["system_table"]}
    head = [n for n in TABLE1 if n in names]
    if head:
        s.blocks.append(View(["system", *(label(n) for n in head)],
                             [[sys, *(est_cell(by[(sys, n)], n) for n in head)] for sys in bench.systems],
                             "Table 1 of the reference paper"))
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
                "of judged replies with it (the reference implementation counted presence only). 'Primary' "
                "counts how often the judge named it the reply's main failure. Rows named 'jf …' are judge-free flags "
                "(a judge-free signal past a threshold that `bench judge-check` validates: presence only, no "
                "severity).")
    if not any(r["n"] or r["n_rate"] for r in t["failures"]):
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
                f"or duration, any fall), between means of at least {agg.DROP_MIN_N} replies each.")
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
                "SalesBot dialogues move from chit-chat through a transition to the task; the reference paper "
                "never split its numbers by phase. Each cell is the mean over the replies to user turns of that "
                "phase.")
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
