"""Reading a YAML config file, with errors that name the file (shared by the bench, recipe and repro configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_yaml(path: str | Path, error: type[Exception], what: str = "config") -> Any:
    """The parsed YAML at `path`; an unreadable file or invalid YAML raises `error` naming the file.
    `what` names the kind of file in the "cannot read" message ("" for none)."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"cannot read {what + ' ' if what else ''}{path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None
