"""One writer per run directory and shard: a second `bench run` on it would duplicate records."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

from spokentod.errors import BenchError


class RunLock:
    """An exclusive, non-blocking flock on `path`, held for the life of the `with` block. The kernel drops
    it when the process ends, a kill -9 included, so a stale lock file never blocks a resume."""

    def __init__(self, path: Path):
        self.path, self.fd = path, -1

    def __enter__(self) -> Self:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise BenchError(f"another `bench run` is writing to {self.path.parent} (lock {self.path.name})") from None
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
