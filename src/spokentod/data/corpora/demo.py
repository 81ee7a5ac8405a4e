"""The embedded demo corpus: 20 original multi-phase sales dialogues shipped with the package."""

from __future__ import annotations

import os
from pathlib import Path

from spokentod.data.corpora import corpus
from spokentod.data.manifest import read_manifest
from spokentod.data.schema import Dialogue
from spokentod.errors import Problem

# Beside the package code (not importlib.resources) because read_manifest wants a real path,
# and the package is always installed unzipped.
DEMO_FILE = Path(__file__).resolve().parents[1] / "demo" / "dialogues.jsonl"


@corpus("demo", multiphase=True, bundled=True)
def load(path: str | os.PathLike | None = None, lenient: bool = False,
         problems: list[Problem] | None = None) -> list[Dialogue]:
    """The shipped dialogues when `path` is None or "demo"; otherwise a manifest in the same format."""
    file = DEMO_FILE if path is None or str(path) == "demo" else Path(path)
    return list(read_manifest(file, lenient=lenient, problems=problems))
