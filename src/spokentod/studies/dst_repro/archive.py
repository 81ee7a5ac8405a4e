"""The report's sources, archived beside it: the small files of a repro out dir that write_report reads
(results, the split, timings, the commands, each run's recipe and phase logs: scores and logs, no audio or weights).

The out dir (runs/dst/repro) holds gigabytes of audio, features and checkpoints and is scratch space that a
new machine does not have; the report stage copies these files to ``<report>/run_files/`` and writes the report
from there, so ``spokentod dst repro-report <report>/run_files`` regenerates it on a fresh checkout."""

from __future__ import annotations

import shutil
from pathlib import Path

from spokentod.studies.dst_repro.config import ReproError
from spokentod.studies.dst_repro.layout import ADAPTER_PIN, ADAPTER_SIDECAR
from spokentod.studies.run_files import copy_files

# Relative to the out dir; globs cover every condition x seed. Predictions are not needed: results.json holds
# every score computed from them (and the CIs).
REPORT_FILES = (
    "results.json", "repro.json", "timings.json", "data/split.json", ADAPTER_PIN, ADAPTER_SIDECAR,
    "shared/recipe.json", "shared/phase1/log.jsonl", "shared/phase1/eval.jsonl", "shared/phase1/summary.json",
    "runs/*/*/recipe.json", "runs/*/*/phase2/log.jsonl", "runs/*/*/phase2/eval.jsonl",
    "runs/*/*/phase2/summary.json",
)


def run_files_dir(report: Path) -> Path:
    """Where a report's sources are archived: beside its figures (reports/dst_repro/run_files)."""
    return report.with_suffix("") / "run_files"


def archive(out: Path, dest: Path) -> Path:
    """Replace ``dest`` with a copy of the report's sources in ``out`` (same relative layout) and return it.
    The old archive goes only once the new one is complete, and a condition no longer in the study does not
    linger. Archiving an archive onto itself is a no-op."""
    out, dest = Path(out), Path(dest)
    if out.resolve() == dest.resolve():
        return dest
    if not (out / "results.json").is_file():
        raise ReproError(f"{out / 'results.json'} does not exist: run the eval stage first")
    files = sorted({p for pattern in REPORT_FILES for p in out.glob(pattern) if p.is_file()})
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    copy_files(out, tmp, (str(p.relative_to(out)) for p in files))
    (tmp / "README.md").write_text(
        "The DST reproduction's report sources (spokentod.studies.dst_repro.archive), copied from the study's "
        f"out dir `{out}` by its report stage.\nRegenerate the report from them: "
        "`spokentod dst repro-report <this folder> --report <the report>`.\nThe dialogue states the scores "
        "come from are MultiWOZ 2.1 (MIT licence, https://github.com/budzianowski/multiwoz); only scores "
        "and training logs are kept here.\n", encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
