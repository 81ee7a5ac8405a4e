"""Corpus loaders: one module per corpus, each with ``load(path, lenient=False, problems=None)``.

Modules register with ``@corpus("name")``. ``load(name, path)`` picks by name; ``detect(path)``
guesses the corpus from file content. Corpora registered with ``bundled=True`` ship their data in the
package, so ``load(name)`` needs no path.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spokentod.data.schema import Dialogue
from spokentod.errors import DataError, Problem

Loader = Callable[..., list[Dialogue]]


@dataclass
class CorpusInfo:
    name: str
    load: Loader
    detect: Callable[[Path], bool] | None
    multiphase: bool
    bundled: bool = False  # ships its own data: path may be None


_CORPORA: dict[str, CorpusInfo] = {}
_loaded = False


def corpus(name: str, detect: Callable[[Path], bool] | None = None, multiphase: bool = False,
           bundled: bool = False):
    """Decorator for a module's ``load`` function."""

    def deco(fn: Loader) -> Loader:
        _CORPORA[name] = CorpusInfo(name, fn, detect, multiphase, bundled)
        return fn

    return deco


def _load_all() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")


def names() -> list[str]:
    _load_all()
    return sorted(_CORPORA)


def info(name: str) -> CorpusInfo:
    _load_all()
    try:
        return _CORPORA[name]
    except KeyError:
        raise KeyError(f"unknown corpus {name!r}; known: {', '.join(names())}") from None


def detect(path: str | os.PathLike) -> str:
    _load_all()
    p = Path(path)
    hits = [c.name for c in _CORPORA.values() if c.detect is not None and c.detect(p)]
    if len(hits) != 1:
        raise DataError(str(p), message=f"cannot auto-detect the corpus (candidates: {hits or 'none'}); pass --corpus")
    return hits[0]


def load(name: str | None, path: str | os.PathLike | None = None, lenient: bool = False,
         problems: list[Problem] | None = None) -> list[Dialogue]:
    """Load a corpus into Dialogues. Strict by default; lenient skips bad records into `problems`.

    `path` may be None only for bundled corpora (e.g. "demo"), which then load their shipped data.
    """
    if path is None:
        if name is None:
            raise DataError("<no path>",
                            message="no corpus and no path: name a bundled corpus (e.g. demo) or give a path")
        if not info(name).bundled:
            raise DataError(name, message=f"{name}: a path is required (this corpus ships no data)")
        return info(name).load(None, lenient=lenient, problems=problems)
    name = name or detect(path)
    # Bundled loaders accept their own names as paths ("demo"), so they check the path themselves.
    if not info(name).bundled and not Path(path).exists():
        raise DataError(str(path), message=f"{name}: path does not exist")
    return info(name).load(path, lenient=lenient, problems=problems)
