"""The bench report (``spokentod bench report DIR [DIR...]``): report.md, a self-contained report.html
and one CSV per table.

The report is a list of sections (analysis/sections.py) rendered to Markdown and HTML
(analysis/document.py). Numbers come from aggregate.py; CSVs hold them unrounded and tidy (one row per
system x metric x ...), for spreadsheets.
"""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spokentod import __version__
from spokentod.analysis import listening, mos_section, pairing_section, plots
from spokentod.analysis.document import Figure, render_html, render_md
from spokentod.analysis.judge_validation import banner as validation_banner
from spokentod.analysis.load import Bench, ReportError, load_bench
from spokentod.analysis.sections import build

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
    bench = load_bench(run_dirs)
    if not bench.replies:
        raise ReportError("the metrics files hold no records: nothing to report")
    out = Path(out) if out else (Path(run_dirs[0]) / "report" if len(run_dirs) == 1 else Path("report"))
    (out / "figures").mkdir(parents=True, exist_ok=True)
    sections, tables = build(bench)
    for extra, after_id in ((pairing_section.build(bench), "phases"), (mos_section.build(bench), "correlations")):
        if extra:  # sections of their own modules, placed after the one they refine
            section, rows = extra
            sections.insert(next((i + 1 for i, s in enumerate(sections) if s.id == after_id), len(sections)), section)
            tables.update(rows)
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
              f"Systems: {', '.join(bench.systems)}; {len(bench.replies)} scored replies.",
              "Every spoken turn with its audio, the judge's reasons and filters: "
              + ", ".join(listening.page_names(bench))
              + " (beside this file)."]
    banner = " ".join(b for b in (weak_banner(bench), validation_banner(bench)) if b) or None
    written["report.md"] = out / "report.md"
    written["report.md"].write_text(render_md(sections, header, banner, figures), encoding="utf-8")
    written["report.html"] = out / "report.html"
    written["report.html"].write_text(render_html(sections, header, banner, plots.system_colors(bench.systems)),
                                      encoding="utf-8")
    written.update(listening.write_pages(bench, out, banner))
    return written
