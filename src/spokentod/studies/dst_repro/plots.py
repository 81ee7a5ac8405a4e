"""The reproduction report's figures (PNG), drawn from results.json and the runs' phase logs only."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from spokentod.studies.dst_repro.layout import run_dir, step_log


def by_condition(rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[r["condition"]][r["test_set"]].append(r)
    return out


def mean(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def write_plots(out: Path, fig_dir: Path, results: dict, conditions: list[str], runs: list[tuple[str, int]],
           test_sets: list[str]) -> dict[str, str]:
    # Imported here, not at the top: matplotlib is slow to import and `use("Agg")` switches the backend of
    # the whole process, which only writing a report should do.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    rows = results["rows"]
    byc = by_condition(rows)

    # 1. JGA per condition with the bootstrap CI of each run, one panel per test set.
    fig, axes = plt.subplots(1, len(test_sets), figsize=(5.5 * len(test_sets), 4), squeeze=False)
    for ax, ts in zip(axes[0], test_sets):
        for i, c in enumerate(conditions):
            rs = byc.get(c, {}).get(ts, [])
            for j, r in enumerate(rs):
                x = i + (j - (len(rs) - 1) / 2) * 0.15
                lo, hi = (r.get("jga_ci") or [r["jga"], r["jga"]])
                ax.errorbar(x, 100 * r["jga"], yerr=[[100 * (r["jga"] - lo)], [100 * (hi - r["jga"])]],
                            fmt="o", capsize=3, color=f"C{i}")
        ax.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right")
        ax.set_ylabel("JGA (%)")
        top = max([100 * ((r.get("jga_ci") or [0, r["jga"]])[1]) for c in conditions for r in byc.get(c, {}).get(ts, [])]
                  or [0])
        ax.set_ylim(0, max(5.0, 1.1 * top))
        ax.set_title(f"{ts}: JGA, 95% bootstrap CI (one point per seed)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(fig_dir / "jga.png", dpi=110)
    plt.close(fig)
    files["jga"] = "jga.png"

    # 2. Per-domain JGA (seed mean) per condition, one panel per test set.
    fig, axes = plt.subplots(1, len(test_sets), figsize=(5.5 * len(test_sets), 4), squeeze=False)
    for ax, ts in zip(axes[0], test_sets):
        domains = sorted({d for c in conditions for r in byc.get(c, {}).get(ts, []) for d in r["per_domain"]})
        width = 0.8 / max(len(conditions), 1)
        for i, c in enumerate(conditions):
            rs = byc.get(c, {}).get(ts, [])
            vals = [mean([r["per_domain"].get(d) for r in rs]) for d in domains]
            ax.bar([k + (i - (len(conditions) - 1) / 2) * width for k in range(len(domains))],
                   [100 * (v or 0) for v in vals], width, label=c, color=f"C{i}")
        ax.set_xticks(range(len(domains)), domains)
        ax.set_ylabel("JGA (%)")
        ax.set_title(f"{ts}: per-domain JGA (mean over seeds)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "per_domain.png", dpi=110)
    plt.close(fig)
    files["per_domain"] = "per_domain.png"

    # 3. WER and slot-key F1 per condition and test set (seed mean).
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(test_sets), 1)
    for k, (metric, title) in enumerate((("wer", "transcript WER (%)"), ("slot_key_f1", "slot-key F1 (%)"))):
        ax = axes[k]
        for j, ts in enumerate(test_sets):
            vals = [mean([r.get(metric) for r in byc.get(c, {}).get(ts, [])]) for c in conditions]
            ax.bar([i + (j - (len(test_sets) - 1) / 2) * width for i in range(len(conditions))],
                   [100 * (v or 0) for v in vals], width, label=ts)
        ax.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "wer_slot_key_f1.png", dpi=110)
    plt.close(fig)
    files["metrics"] = "wer_slot_key_f1.png"

    # 4. Learning curves: phase 1 ASR loss, phase 2 first loss and total loss, dev JGA.
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    axes = axes.ravel()
    p1 = step_log(out / "shared" / "phase1" / "log.jsonl")
    if p1:
        axes[0].plot([r["step"] for r in p1], [r["loss"] for r in p1], ".-", color="k")
    p1e = step_log(out / "shared" / "phase1" / "eval.jsonl")
    if p1e:
        tw = axes[0].twinx()
        tw.plot([r["step"] for r in p1e], [100 * r["wer"] for r in p1e], "s--", color="C3")
        tw.set_ylabel("dev WER (%)", color="C3")
    axes[0].set_title("phase 1 (shared): ASR loss")
    axes[0].set_xlabel("step")
    for i, (c, s) in enumerate(runs):
        ci = conditions.index(c)
        style = "-" if s == runs[0][1] or sum(1 for x in runs if x[0] == c) == 1 else "--"
        mark = "." if len(step_log(run_dir(out, c, s) / "phase2" / "log.jsonl")) < 50 else ""
        log = step_log(run_dir(out, c, s) / "phase2" / "log.jsonl")
        if log:
            first = next((k for k in log[0] if k.startswith("loss_")), "loss")
            axes[1].plot([r["step"] for r in log], [r[first] for r in log], mark + style, color=f"C{ci}",
                         label=f"{c} s{s} ({first[5:]})")
            axes[2].plot([r["step"] for r in log], [r["loss"] for r in log], mark + style, color=f"C{ci}",
                         label=f"{c} s{s}")
        ev = step_log(run_dir(out, c, s) / "phase2" / "eval.jsonl")
        if ev:
            axes[3].plot([r["step"] for r in ev], [100 * r["jga"] for r in ev], "o" + style, color=f"C{ci}",
                         label=f"{c} s{s}")
    axes[1].set_title("phase 2: first loss of each condition")
    axes[2].set_title("phase 2: weighted total loss")
    axes[3].set_title("phase 2: dev JGA (%)")
    for ax in axes[1:]:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(fig_dir / "learning_curves.png", dpi=110)
    plt.close(fig)
    files["curves"] = "learning_curves.png"
    return files
