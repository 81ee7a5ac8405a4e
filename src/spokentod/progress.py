"""The one progress-bar look every long loop uses: label, bar, done/total (and a unit), any extra columns,
elapsed time and ETA, on stderr so that stdout stays for results."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_STDERR = Console(stderr=True)


def progress_bar(label: str = "{task.description}", *, unit: str | None = None,
                 extra: tuple[ProgressColumn, ...] = (), console: Console | None = None, disable: bool = False,
                 transient: bool = False, **kwargs: Any) -> Progress:
    """A rich Progress (use it as a context manager; disabled, it is a no-op with the same interface).
    `label` is shown first (a rich format string: the default shows each task's description); `extra`
    columns (e.g. a loss or a rate) go after the count; `kwargs` go to Progress."""
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), *([TextColumn(unit)] if unit else []),
               *extra, TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, console=console or _STDERR, disable=disable, transient=transient, **kwargs)
