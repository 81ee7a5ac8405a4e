"""The Context Trap study report (issue #19): `reports/context_trap_cpu.md` from a scored bench run's files.

    spokentod bench study runs/context_trap_cpu --out reports/context_trap_cpu.md

It writes the full bench report (HTML, one listening page per system, CSVs, figures) beside the markdown, in
`reports/context_trap_cpu/`, and puts in front of it what the study asks: what ran and how long each stage
took, and the verdict on the reference paper's claim — at this scale, does the end-to-end system lose more
quality per turn than the cascade? Per history mode (gold context, free-running), the degradation is the
OLS slope of a dialogue-level quality metric on the turn position R1..Rn; the verdict is the difference of
the slopes (end-to-end − cascade) with a 95 % bootstrap CI over dialogues, paired (same dialogues). Every
number is computed here from the run files; the sentence follows from the CI, whatever it says.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spokentod import __version__
from spokentod.analysis import stats
from spokentod.analysis.judge_validation import group_checks
from spokentod.analysis.load import Bench, ReportError, load_bench, metric
from spokentod.analysis.report import write_report

# The verdict rests on the first metric the run has; the others are shown beside it. context_sim (the reply's
# similarity to the dialogue so far) is the judge-free signal that separates gold replies from off-topic ones
# in `bench judge-check`; sim_gold (similarity to the corpus's own next agent reply) is the reference-based one.
VERDICT_METRICS = ("context_sim", "sim_gold")
MODES = ("gold", "self")
MODE_TEXT = {"gold": "gold context", "self": "free-running"}


@dataclass(frozen=True)
class Slopes:
    metric: str
    mode: str
    e2e: str  # system labels
    cascade: str
    result: stats.SlopeDifference
    text: stats.SlopeDifference | None = None  # the text-only system − cascade: the LLM's own trend, for scale


def _config(bench: Bench) -> dict[str, dict[str, Any]]:
    """label → that system's config entry (type, history...), from each run's run.json."""
    out = {}
    for run in bench.runs:
        systems = ((run.meta.get("config") or {}).get("systems")) or {}
        for raw, cfg in systems.items():
            if (run.name, raw) in bench.label and isinstance(cfg, dict):
                out[bench.label[(run.name, raw)]] = cfg
    return out


def roles(bench: Bench) -> dict[tuple[str, str], str]:
    """(type, history mode) → system label, for the systems the study compares (first one of each)."""
    out: dict[tuple[str, str], str] = {}
    for label, cfg in _config(bench).items():
        out.setdefault((str(cfg.get("type")), str(cfg.get("history") or "gold")), label)
    return out


def _points(bench: Bench, system: str, name: str) -> dict[str, list[tuple[float, float | None]]]:
    by: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for r in bench.replies:
        if r.system == system and r.ordinal is not None:
            by[f"{r.dialogue_id}#{r.seed}"].append((float(r.ordinal), r.values.get(name)))
    return by


def slopes(bench: Bench, n_boot: int = 2000, seed: int = 0) -> list[Slopes]:
    """E2E vs cascade degradation slopes for every verdict metric present and every history mode run."""
    who = roles(bench)
    out = []
    for name in (m for m in VERDICT_METRICS if m in bench.names):
        for mode in MODES:
            e2e, cascade = who.get(("e2e", mode)), who.get(("cascade", mode))
            if e2e and cascade:
                base = _points(bench, cascade, name)
                r = stats.cluster_bootstrap_slope_diff(_points(bench, e2e, name), base, n_boot=n_boot, seed=seed)
                text = who.get(("text", mode))
                t = (stats.cluster_bootstrap_slope_diff(_points(bench, text, name), base, n_boot=n_boot, seed=seed)
                     if text else None)
                out.append(Slopes(name, mode, e2e, cascade, r, t))
    return out


def _f(x: float, d: int = 4, sign: bool = True) -> str:
    return "–" if x is None or math.isnan(x) else (f"{x:+.{d}f}" if sign else f"{x:.{d}f}")


def verdict(s: Slopes) -> str:
    """The sentence the CI supports. Higher is better for the verdict metrics, so a more negative slope is a
    larger loss of quality per turn."""
    r = s.result
    head = f"{metric(s.metric).label}, {MODE_TEXT[s.mode]}"
    if math.isnan(r.lo):
        return f"**Not determined** ({head}): too few dialogues for an interval (n={r.clusters})."
    ci = f"slope difference e2e − cascade {_f(r.diff)} per turn, 95 % CI [{_f(r.lo)}, {_f(r.hi)}], n={r.clusters} dialogues"
    if r.hi < 0:
        return f"**Yes** ({head}): the end-to-end system loses more per turn than the cascade; {ci}."
    if r.lo > 0:
        return f"**No — the reverse** ({head}): the cascade loses more per turn than the end-to-end system; {ci}."
    return (f"**Not shown** ({head}): the CI of the difference includes 0, so at this scale the end-to-end "
            f"system does not lose measurably more per turn than the cascade; {ci} (width ±{(r.hi - r.lo) / 2:.4f}).")


def _slope_table(rows: list[Slopes]) -> list[str]:
    out = [("| metric | mode | cascade slope [95 % CI] | e2e slope [95 % CI] | e2e − cascade [95 % CI] | p | dialogues "
           "| text-only slope [95 % CI] |"), "|---|---|---|---|---|---|---|---|"]
    for s in rows:
        r, t = s.result, s.text
        out.append(f"| {s.metric} | {MODE_TEXT[s.mode]} | {_f(r.b)} [{_f(r.b_lo)}, {_f(r.b_hi)}] | "
                   f"{_f(r.a)} [{_f(r.a_lo)}, {_f(r.a_hi)}] | **{_f(r.diff)}** [{_f(r.lo)}, {_f(r.hi)}] | "
                   f"{_f(r.p, 3, False)} | {r.clusters} | "
                   + (f"{_f(t.a)} [{_f(t.a_lo)}, {_f(t.a_hi)}] |" if t else "– |"))
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    m, s = divmod(round(seconds), 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min {s:02d} s"


def stage_times(bench: Bench) -> list[tuple[str, str]]:
    """(stage, wall time) from the run files: bench sessions (rendering the user audio included) and scoring."""
    rows = []
    for run in bench.runs:
        sessions = run.meta.get("sessions") or []
        ran = sum(s.get("wall_s") or 0.0 for s in sessions)
        rows.append(((f"bench run ({len(sessions)} session{'s' * (len(sessions) != 1)}, user audio rendering "
                     "included)"), _duration(ran)))
        rows.append(("scoring (`bench score`)", _duration(run.summary.get("wall_s"))))
    return rows


def _what_ran(bench: Bench) -> list[str]:
    run = bench.runs[0]
    cfg = run.meta.get("config") or {}
    data = cfg.get("dataset") or {}
    dialogues = {(r.dialogue_id, r.seed) for r in bench.replies}
    out = [(f"- Dataset: `{data.get('corpus')}` ({Path(str(data.get('path') or '')).name or 'default files'}), "
           f"sample {data.get('sample') or 'all'}: {len(dialogues)} dialogues scored."),
           "- Systems (one LLM and one prompt for all, so the comparison is controlled):"]
    for label, c in _config(bench).items():
        n = sum(1 for r in bench.replies if r.system == label)
        out.append(f"  - `{label}`: {c.get('type')}, history {c.get('history', 'gold')}, {n} replies")
    return out


def trust(checks: list[dict[str, Any]], name: str) -> str:
    """How far the verdict's metric can be trusted: its judge-check line (figures and verdict) from the runs'
    `checks` (judge_validation.group_checks), or why there is none."""
    for check in checks:
        if name in check["scorers"]:
            return check["scorers"][name]["line"]
    from spokentod.bench.judgecheck.check import REFERENCE_BASED

    why = f" (it cannot be: it {REFERENCE_BASED[name]})" if name in REFERENCE_BASED else ""
    return f"`{name}`: no judge-check on record{why} — unvalidated"


def render(bench: Bench, body: str, command: str, folder: str, n_boot: int = 2000) -> str:
    rows = slopes(bench, n_boot=n_boot)
    lines = ["# The Context Trap on a CPU: cascade vs end-to-end vs text, gold context and free-running", "",
             (f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} by spokentod {__version__} from "
             f"{', '.join(f'`{r.path}`' for r in bench.runs)}. Regenerate: `{command}`."), "",
             "## Verdict", "",
             ("The reference paper's claim: end-to-end spoken dialogue systems lose more quality with context than "
             "cascades. Tested here as the per-turn slope of a dialogue-quality metric (R1..Rn; higher is better, "
             "so a negative slope is a loss per turn), end-to-end minus cascade, with a 95 % bootstrap CI over "
             "dialogues (paired: both systems ran the same dialogues)."), ""]
    if rows:
        checks = [c for run in bench.runs for _, c in group_checks(run.summary) if c]  # read once, from the store
        lines += [f"- {verdict(s)}" for s in rows] + ["", *_slope_table(rows), ""]
        lines += [(f"The verdict rests on `{rows[0].metric}` under {MODE_TEXT[rows[0].mode]} (first line); the other "
                  "lines are the same test on the other metric and mode. The text-only system (the same LLM reading "
                  "the gold user text) shows how much of a trend is the LLM's own. Whether each metric can be "
                  "trusted, and by how much, is in the judge-check section below; for the verdict's metrics:"), "",
                  *(f"- {trust(checks, m)}" for m in dict.fromkeys(r.metric for r in rows)), ""]
    else:
        lines += [("**Not determined:** the run has no cascade and end-to-end pair with a verdict metric "
                  f"({', '.join(VERDICT_METRICS)})."), ""]
    lines += ["## What ran", "", *_what_ran(bench), "", "| stage | wall time |", "|---|---|",
              *(f"| {a} | {b} |" for a, b in stage_times(bench)), ""]
    # the bench report's sections (its own header dropped), one level down
    sections = body[body.index("\n## "):] if "\n## " in body else ""
    lines += ["## The bench report", "", (f"Below: the bench report's sections. The same with every spoken turn's "
              f"audio, filterable: `{folder}/report.html` and the listening pages beside it. Its audio files are "
              f"not in git (they are the run's own WAVs, copied there): to hear them, run the study's config again "
              f"(`spokentod bench run CONFIG`, then `spokentod bench score` on its directory), then the command "
              f"above."), ""]
    lines += [ln.replace("## ", "### ", 1) if ln.startswith("## ") else ln for ln in sections.split("\n")]
    return "\n".join(lines)


def write(run_dirs: list[Path], out_md: Path, n_boot: int = 2000) -> dict[str, Path]:
    """Write `out_md` and the full bench report into its stem folder (`reports/context_trap_cpu/`)."""
    out_md = Path(out_md)
    folder = out_md.with_suffix("")
    written = write_report(list(run_dirs), folder)
    bench = load_bench(list(run_dirs))
    if not bench.replies:
        raise ReportError("the metrics files hold no records: nothing to report")
    body = written["report.md"].read_text(encoding="utf-8")
    # the bench report's figure links are relative to its folder; the study's markdown sits one level up
    body = body.replace("](figures/", f"]({folder.name}/figures/")
    command = f"spokentod bench study {' '.join(str(d) for d in run_dirs)} --out {out_md}"
    out_md.write_text(render(bench, body, command, folder.name, n_boot), encoding="utf-8")
    return {"study": out_md, **written}
