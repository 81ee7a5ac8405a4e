"""Atomic file writes: write a temporary file beside the target, then rename it over the target, so a
reader (or a crash) sees the old file or the new one, never half of one.

The temporary name is unique per call (``.<name>.<random>.tmp`` in the target's directory, created with
O_EXCL), so concurrent writers of one target never share a temporary file; the last rename wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

Data = bytes | bytearray | memoryview | str | Callable[[BinaryIO], object]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)


def _create_temp(parent: Path, name: str) -> tuple[int, Path]:
    # Not tempfile.mkstemp: it creates mode 0600, which the rename would hand to the target; mode 0666
    # lets the umask decide, as a plain open() would.
    for _ in range(100):
        tmp = parent / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {parent / name}")


def atomic_write(path: str | os.PathLike, data: Data, *, fsync: bool = False) -> Path:
    """Write `data` to `path` atomically and return `path` as a Path.

    `data` is bytes, str (written as utf-8) or a callable ``write(binary_file)``. The parent directory is
    created. On any exception the temporary file is removed (an existing `path` is left untouched) and
    the exception re-raised. ``fsync=True`` flushes the file to disk before the rename, so once this
    returns the new content survives a power loss (as far as the rename does).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the original error is the one worth seeing
            tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, fsync: bool = False,
               **json_kwargs: Any) -> Path:
    """`obj` as JSON (``json.dumps(obj, indent=indent, **json_kwargs)`` plus a newline), atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, **json_kwargs) + "\n", fsync=fsync)


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move directory `src` to `dst`, replacing any existing `dst`.

    A directory cannot be renamed over a non-empty one, so the old `dst` is first renamed aside to
    ``.<name>.old``, then removed once the new tree is in place: a crash in between leaves the old tree
    whole under that name instead of half-deleted under `dst`.
    """
    src, dst = Path(src), Path(dst)
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst
