"""Provenance of a run: which code, host and packages made it, with credentials scrubbed out of
anything recorded (run.json holds the config and backend identities, which may name keys or tokens)."""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

_SECRET_PARTS = {"key", "apikey", "token", "secret", "password", "passwd", "authorization", "auth", "credentials"}


def _secret_name(name: str) -> bool:
    # Split on separators and camelCase: api_key_env, X-Api-Key, apiKey → secret; max_tokens → not.
    parts = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower())
    return any(p in _SECRET_PARTS for p in parts)


def _secret_env_values() -> list[str]:
    return sorted({v for k, v in os.environ.items() if _secret_name(k) and len(v) >= 6}, key=len, reverse=True)


def scrub(obj: Any, _values: list[str] | None = None) -> Any:
    """Drop anything that may be a credential: values of keys named like key/token/secret/password, and
    any occurrence of such an environment variable's value inside a string."""
    values = _secret_env_values() if _values is None else _values
    if isinstance(obj, dict):
        return {k: "<redacted>" if _secret_name(k) else scrub(v, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, values) for v in obj]
    if isinstance(obj, str):
        for v in values:
            obj = obj.replace(v, "<redacted>")
    return obj


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.cache  # once per process: it cannot change under a running bench
def git_info() -> dict[str, Any] | None:
    """Commit of the spokentod checkout this code runs from, if it is one."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=False)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


@functools.cache
def host_info() -> dict[str, Any]:
    return {"hostname": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch": _pkg_version("torch")}
