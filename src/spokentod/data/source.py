"""Where a list of dialogues comes from, and loading it: a registered corpus (name + path) or a spokentod
JSONL manifest, optionally sampled and limited. Every layer that needs "the dialogues of X" (the bench
runner, the scorer re-reading a run's dataset, DST training and inference) loads them here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spokentod.data import corpora
from spokentod.data.manifest import read_manifest
from spokentod.data.sample import stratified_sample
from spokentod.data.schema import Dialogue
from spokentod.errors import DataError, Problem


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sample(_M):
    n: int = Field(ge=1)
    stratify: Literal["intent", "source"] | None = "intent"
    seed: int = 0


class DialogueSource(_M):
    corpus: str | None = None  # a registered corpus name (see `spokentod data corpora`)
    path: str | None = None  # the corpus files; may be omitted for bundled corpora (demo)
    manifest: str | None = None  # a spokentod JSONL manifest instead of corpus + path
    sample: Sample | None = None
    limit: int | None = Field(None, ge=1)  # first N dialogues (after sampling)
    lenient: bool = False  # skip bad records instead of failing

    @model_validator(mode="after")
    def _one_source(self) -> DialogueSource:
        if self.manifest and (self.corpus or self.path):
            raise ValueError("give either 'manifest' or 'corpus' (+ 'path'), not both")
        if not self.manifest and not self.corpus and not self.path:
            raise ValueError("give 'corpus' (+ 'path') or 'manifest'")
        return self


def load_dialogues(source: DialogueSource, limit: int | None = None,
                   problems: list[Problem] | None = None) -> tuple[list[Dialogue], Path | None]:
    """The dialogues of `source` (sampled, then the first `limit` or `source.limit`) and the folder their
    audio paths are relative to (a manifest's folder; None for corpus loaders, which give absolute paths).

    Records skipped by a lenient source go into `problems`. Duplicate dialogue ids are a DataError:
    results keyed by dialogue id could not be told apart.
    """
    if source.manifest:
        dialogues = list(read_manifest(source.manifest, lenient=source.lenient, problems=problems))
        base: Path | None = Path(source.manifest).resolve().parent
    else:
        dialogues = corpora.load(source.corpus, source.path, lenient=source.lenient, problems=problems)
        base = None
    if source.sample:
        dialogues = stratified_sample(dialogues, source.sample.n, source.sample.stratify, source.sample.seed)
    n = limit or source.limit
    if n:
        dialogues = dialogues[:n]
    dup = [i for i, c in Counter(d.id for d in dialogues).items() if c > 1]
    if dup:
        raise DataError(source.manifest or source.path or str(source.corpus),
                        message=f"dialogue ids are not unique ({dup[:5]}): results could not be told apart")
    return dialogues, base
