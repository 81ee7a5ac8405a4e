"""Corpus loaders: one module per corpus, each with ``load(path, lenient=False, problems=None)``.

Modules register with ``@corpus("name")``. ``load(name, path)`` picks by name; ``detect(path)``
guesses the corpus from file content.
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


_CORPORA: dict[str, CorpusInfo] = {}
_loaded = False


def corpus(name: str, detect: Callable[[Path], bool] | None = None, multiphase: bool = False):
    """Decorator for a module's ``load`` function."""

    def deco(fn: Loader) -> Loader:
        _CORPORA[name] = CorpusInfo(name, fn, detect, multiphase)
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


def load(name: str | None, path: str | os.PathLike, lenient: bool = False,
         problems: list[Problem] | None = None) -> list[Dialogue]:
    """Load a corpus into Dialogues. Strict by default; lenient skips bad records into `problems`."""
    name = name or detect(path)
    if not Path(path).exists():
        raise DataError(str(path), message=f"{name}: path does not exist")
    return info(name).load(path, lenient=lenient, problems=problems)
