"""A versioned prompt: a text file found by bundled name or path, identified by its sha256 (recorded in
results). Systems and the judge subclass it with their own `render`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Self


@dataclass(frozen=True)
class PromptFile:
    name: str
    template: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()

    @classmethod
    def load(cls, name_or_path: str, folder: Path, what: str = "prompt") -> Self:
        """A bundled prompt by name (`folder/<name>.txt`) or any text file path."""
        p = Path(name_or_path)
        if not p.suffix:
            p = folder / f"{name_or_path}.txt"
        if not p.is_file():
            raise FileNotFoundError(f"{what} {name_or_path!r} not found (looked for {p})")
        return cls(p.stem, p.read_text(encoding="utf-8"))
