"""Reading what a training run leaves in ``<run>/phaseN/``: the per-step and per-evaluation JSONL logs
written by :mod:`spokentod.dst.train.loop`, and its small JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path, default: Any = None) -> Any:
    """The file's JSON, or `default` when it is missing or not yet complete."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def step_log(path: Path) -> list[dict]:
    """The records of a log.jsonl/eval.jsonl, one per step in step order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    out: dict[int, dict] = {}
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            out[r["step"]] = r  # a resumed run may log a step twice: the later one stands
    return [out[k] for k in sorted(out)]
