"""The report's "do the MOS predictors agree?" section: Spearman rank correlation over replies between every
two MOS predictors a run was scored with (DNSMOS OVRL and P.808, DistillMOS, plug-ins), pooled and per
system, with a scatter plot. A predictor is trusted here only as far as another one, trained differently,
ranks the same replies the same way; the section says so when they do not. Absent with fewer than two."""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

from spokentod.analysis import stats
from spokentod.analysis.document import Cell, Figure, Note, Section, View
from spokentod.analysis.load import Bench, metric
from spokentod.analysis.plots import _plt, _png, system_colors
from spokentod.analysis.sections import label, num

SUBSCORES = ("dnsmos_sig", "dnsmos_bak")  # parts of DNSMOS OVRL, not predictors of their own
AGREE = 0.5  # below this pooled rho the predictors rank replies too differently to trust either alone

HOW = ("Spearman's ρ between two MOS predictors over the replies both scored (rank agreement: 1 = the same "
       "order), pooled over systems and per system, with a 95 % Fisher-z CI (standard error √(1.06/(n−3))). "
       "Pooled ρ mixes differences between systems into the agreement; per system it asks whether the "
       "predictors agree on which of one system's replies sound better. DNSMOS (Microsoft, trained on "
       "P.808 ratings of noisy speech) and DistillMOS (distilled from an XLS-R quality model) were trained "
       "differently: where they disagree, a MOS difference rests on one model's view.")


def predictors(bench: Bench) -> list[str]:
    return [n for n in bench.metrics if metric(n).section == "audio quality" and "mos" in n.lower()
            and n not in SUBSCORES and len(set(bench.values(n))) > 1]


def agreement(bench: Bench, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for a, b in combinations(names, 2):
        for scope in [None, *bench.systems]:
            mine = [r for r in bench.replies if scope is None or r.system == scope]
            c = stats.spearman_ci([r.values.get(a) for r in mine], [r.values.get(b) for r in mine])
            if c.n:
                rows.append({"metric_x": a, "metric_y": b, "scope": scope or "all", "rho": c.r, "ci_low": c.lo,
                             "ci_high": c.hi, "n": c.n, "p": c.p})
    return rows


def scatter(bench: Bench, a: str, b: str) -> bytes:
    plt = _plt()
    colors = system_colors(bench.systems)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for s in bench.systems:
        pts = [(r.values[a], r.values[b]) for r in bench.replies if r.system == s and a in r.values and b in r.values]
        if pts:
            x, y = zip(*pts)
            ax.scatter(x, y, s=14, alpha=0.7, color=colors[s], label=s)
    ax.set_xlabel(label(a))
    ax.set_ylabel(label(b))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)


def build(bench: Bench) -> tuple[Section, dict[str, list[dict[str, Any]]]] | None:
    names = predictors(bench)
    if len(names) < 2:
        return None
    rows = agreement(bench, names)
    s = Section("mos_agreement", "Do the MOS predictors agree?", HOW)
    view = []
    for r in rows:
        sig = math.isfinite(r["ci_low"]) and (r["ci_low"] > 0 or r["ci_high"] < 0)
        ci = f"[{num(r['ci_low'])}, {num(r['ci_high'])}]" if math.isfinite(r["ci_low"]) else "–"
        view.append([f"{metric(r['metric_x']).label} × {metric(r['metric_y']).label}", r["scope"],
                     Cell(num(r["rho"]), "sig" if sig else ""), ci, str(r["n"])])
    s.blocks.append(View(["predictors", "replies of", "Spearman ρ", "95 % CI", "n"], view, lead=2))
    for r in rows:
        if r["scope"] == "all" and math.isfinite(r["rho"]) and r["rho"] < AGREE:
            s.blocks.append(Note(f"{metric(r['metric_x']).label} and {metric(r['metric_y']).label} agree weakly "
                                 f"(pooled ρ = {num(r['rho'])}, n = {r['n']}): a difference in either one alone "
                                 "is not evidence of better-sounding audio.", "warn"))
    main = [n for n in ("dnsmos_ovrl", "distillmos") if n in names]
    a, b = main if len(main) == 2 else names[:2]
    s.blocks.append(Figure("mos_agreement", scatter(bench, a, b), f"{metric(a).label} vs {metric(b).label}, per reply"))
    return s, {"mos_agreement": rows}
