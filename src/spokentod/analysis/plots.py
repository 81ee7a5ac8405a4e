"""Figures for the report, as PNG bytes (matplotlib, Agg backend: no display needed).

One colour per system, fixed by its position in the report's system list, so a system looks the same in
every figure and in the tables' colour swatches.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import Any

from spokentod.analysis.load import metric

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
            "#d62728"]  # tab10, red last: red marks flagged drops


def system_colors(systems: list[str]) -> dict[str, str]:
    return {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(systems)}


def _plt():
    import matplotlib  # heavy and from the embedded extra: only when a figure is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # layout is done by tight_layout: bbox_inches="tight" would render twice
    _plt().close(fig)
    return buf.getvalue()


def axis_label(name: str) -> str:
    m = metric(name)
    unit = "%" if m.scale == "rate" else m.unit
    return f"{m.label} ({unit})" if unit else m.label


def scale(name: str) -> float:
    m = metric(name)
    return 100.0 if m.scale == "rate" else m.factor


def turn_line(ax: Any, pts: list[dict[str, Any]], key: str, f: float, color: str, label: str) -> None:
    """One series by turn: `key` × f with its bootstrap band (ci_low..ci_high × f) where the CI exists."""
    ax.plot([p["turn"] for p in pts], [p[key] * f for p in pts], marker="o", ms=3, color=color, label=label)
    band = [(p["turn"], p["ci_low"] * f, p["ci_high"] * f) for p in pts if math.isfinite(p["ci_low"])]
    if band:
        bx, lo, hi = zip(*band)
        ax.fill_between(bx, lo, hi, color=color, alpha=0.15, linewidth=0)


def per_turn_figure(rows: list[dict[str, Any]], names: list[str], colors: dict[str, str], ncols: int = 3) -> bytes:
    """Small multiples: one panel per metric, a line per system over R1..Rn with its 95 % CI band; red
    triangles where the turn was flagged as a drop from the one before."""
    plt = _plt()
    ncols = min(ncols, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        series[(r["metric"], r["system"])].append(r)
    for ax, name in zip(axes.flat, names):
        f = scale(name)
        for system, color in colors.items():
            pts = sorted(series.get((name, system), []), key=lambda r: r["turn"])
            if not pts:
                continue
            turn_line(ax, pts, "mean", f, color, system)
            drops = [p for p in pts if p["drop"]]
            ax.scatter([p["turn"] for p in drops], [p["mean"] * f for p in drops], marker="v", s=70,
                       facecolor="none", edgecolor="#d62728", linewidth=1.6, zorder=5)
        ax.set_title(axis_label(name), fontsize=10)
        ax.set_xlabel("user turn (R)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    legend: dict[str, Any] = {}  # every system drawn in any panel, in report order
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    labels = [s for s in colors if s in legend]
    handles = [legend[s] for s in labels]
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False,
                   bbox_to_anchor=(0.5, 1.0))
    # Fixed margins in inches rather than tight_layout, which measures every label (a third of the time).
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.7 / w, right=1 - 0.15 / w, bottom=0.55 / h, top=1 - 0.75 / h, wspace=0.3,
                        hspace=0.6 if nrows > 1 else 0.2)
    return _png(fig)


def heatmap_figure(rows: list[dict[str, Any]], names: list[str], split: int) -> bytes:
    """Pearson r between every pair of `names` (pooled rows); bold when the 95 % CI excludes 0, blank when
    undefined. A line separates audio-side metrics (the first `split`) from dialogue-side ones."""
    import numpy as np

    plt = _plt()
    k = len(names)
    idx = {n: i for i, n in enumerate(names)}
    r = np.full((k, k), np.nan)
    sig = np.zeros((k, k), dtype=bool)
    np.fill_diagonal(r, 1.0)
    for row in rows:
        if row["scope"] != "all" or row["metric_x"] not in idx or row["metric_y"] not in idx:
            continue
        i, j = idx[row["metric_x"]], idx[row["metric_y"]]
        r[i, j] = r[j, i] = row["r"]
        sig[i, j] = sig[j, i] = math.isfinite(row["ci_low"]) and (row["ci_low"] > 0 or row["ci_high"] < 0)
    size = max(5.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(np.ma.masked_invalid(r), cmap="RdBu_r", vmin=-1, vmax=1)
    labels = [metric(n).label for n in names]
    ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    for i in range(k):
        for j in range(k):
            if i != j and math.isfinite(r[i, j]):
                ax.text(j, i, f"{r[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        fontweight="bold" if sig[i, j] else "normal",
                        color="white" if abs(r[i, j]) > 0.6 else "black")
    if 0 < split < k:
        ax.axhline(split - 0.5, color="black", lw=1.2)
        ax.axvline(split - 0.5, color="black", lw=1.2)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Pearson r")
    fig.tight_layout()
    return _png(fig)


def failure_figure(rows: list[dict[str, Any]], colors: dict[str, str]) -> bytes:
    """Grouped bars per failure type: mean severity (0-100) and presence rate (%), with 95 % CIs."""
    import numpy as np

    plt = _plt()
    fails = list(dict.fromkeys(r["failure"] for r in rows))
    systems = [s for s in colors if any(r["system"] == s for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    width = 0.8 / max(1, len(systems))
    for ax, (key, lo, hi, f, title) in zip(axes, (
            ("severity", "severity_ci_low", "severity_ci_high", 1, "mean severity (0-100)"),
            ("presence_rate", "rate_ci_low", "rate_ci_high", 100, "presence rate (%)"))):
        for i, s in enumerate(systems):
            by = {r["failure"]: r for r in rows if r["system"] == s}
            mean = np.array([by[x][key] * f if x in by else np.nan for x in fails])
            err = np.array([[max(0.0, (by[x][key] - by[x][lo]) * f) if x in by and math.isfinite(by[x][lo]) else 0
                             for x in fails],
                            [max(0.0, (by[x][hi] - by[x][key]) * f) if x in by and math.isfinite(by[x][hi]) else 0
                             for x in fails]])
            ax.bar(np.arange(len(fails)) + (i - (len(systems) - 1) / 2) * width, np.nan_to_num(mean), width,
                   yerr=err, color=colors[s], label=s, capsize=2, error_kw={"lw": 0.8})
        ax.set_xticks(range(len(fails)), [x.replace("_", " ") for x in fails], fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)
