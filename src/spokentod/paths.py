"""Where spokentod keeps converted models and caches (override with SPOKENTOD_CACHE)."""

from __future__ import annotations

import os
import re
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    base = Path(os.environ.get("SPOKENTOD_CACHE") or Path.home() / ".cache" / "spokentod")
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def slug(label: str) -> str:
    """A folder name for a run's label: the label up to its first colon ("run2: what changed" → run2)."""
    return re.sub(r"[^a-z0-9]+", "-", label.split(":")[0].lower()).strip("-")[:40] or "run"
