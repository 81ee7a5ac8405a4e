"""Where spokentod keeps converted models and caches (override with SPOKENTOD_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    base = Path(os.environ.get("SPOKENTOD_CACHE") or Path.home() / ".cache" / "spokentod")
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
