"""Copying a run's small report sources into git (a study's ``<report>/run_files/``): runs/ is scratch space
that a fresh checkout lacks, so each study's report is written from the copies."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path


def copy_files(src: Path, dest: Path, names: Iterable[str]) -> None:
    """Copy each ``src/name`` that exists to ``dest/name`` (same relative path; a file onto itself is left)."""
    for n in names:
        if (src / n).is_file() and (src / n).resolve() != (dest / n).resolve():
            (dest / n).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / n, dest / n)  # copy2: an old run's wall time is read off the files' times
