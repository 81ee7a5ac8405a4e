"""A backend named on a command line or in a config: a registered name ("smollm2"), a JSON object
('{"name": "openai", "model": ..., "base_url": ...}'), or a .json/.yaml/.yml file holding that object."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from spokentod.config_file import read_yaml

SPEC_FILES = (".json", ".yaml", ".yml")


def parse_backend_spec(value: str | os.PathLike | dict[str, Any] | None) -> dict[str, Any] | None:
    """The backend config dict `value` stands for (None stays None; a dict is returned as given).

    ValueError (naming the text or the file) for invalid JSON, a spec file that does not exist, or an object
    without a 'name'. A path ending in .json/.yaml/.yml is always read as a file, never taken as a name.
    """
    if value is None or isinstance(value, dict):
        return value
    s = str(value).strip()
    if s.startswith("{"):
        try:
            spec = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"backend spec {s!r} is not valid JSON: {e.msg}") from None
    elif Path(s).suffix in SPEC_FILES:
        p = Path(s)
        if not p.is_file():
            raise ValueError(f"backend spec file {s} does not exist")
        spec = read_yaml(p, ValueError, "backend spec file")
    else:
        return {"name": s}
    if not isinstance(spec, dict) or not spec.get("name"):
        raise ValueError(f"backend spec {s!r} must be an object with a 'name'")
    return spec
