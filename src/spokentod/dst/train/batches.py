"""What feeds a training step: endless seeded streams of batches, the named data sets of a recipe (as
Examples or ASR items, TTS-rendered first when the recipe asks), and the speech features of a batch."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from spokentod.audio import load_audio
from spokentod.data import DialogueSource, load_dialogues
from spokentod.data.synth import synthesize_manifest
from spokentod.dst.data.asr_items import load_asr_items
from spokentod.dst.data.examples import Example, make_examples
from spokentod.dst.model.encoders import RATE
from spokentod.dst.model.features import EncoderFeatures, FeatureCache
from spokentod.dst.train.recipe import DataSpec
from spokentod.errors import SpokenTODError


class Stream:
    """Endless shuffled batches over `items`; epoch e's order is a permutation seeded by (seed, name, e)."""

    def __init__(self, items: list, batch_size: int, seed: int, name: str):
        if not items:
            raise SpokenTODError(f"data for loss {name!r} is empty (every example was filtered out?)")
        self.items, self.batch_size = items, batch_size
        self.key = [seed, zlib.crc32(name.encode())]
        self.epoch, self.index = 0, 0
        self._order = self._perm()

    def _perm(self) -> np.ndarray:
        return np.random.default_rng(self.key + [self.epoch]).permutation(len(self.items))

    def next(self, world: int = 1, rank: int = 0) -> list:
        """The next global batch of batch_size × world items; this process's slice of it."""
        out = []
        for _ in range(self.batch_size * world):
            if self.index == len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._perm()
            out.append(self.items[self._order[self.index]])
            self.index += 1
        return out[rank * self.batch_size:(rank + 1) * self.batch_size]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, sd: dict) -> None:
        self.epoch, self.index = sd["epoch"], sd["index"]
        self._order = self._perm()


class Features:
    """Encoder features for audio paths: from the on-disk cache when the encoder is frozen, else computed
    (with gradients) every step."""

    def __init__(self, encoder, cache: bool, root: str | None = None):
        self.encoder = encoder
        self.trainable = bool(getattr(encoder, "trainable", False))
        self.cache = FeatureCache(encoder, root, progress=False) if cache and not self.trainable else None

    def __call__(self, paths: list[str]):
        """(features, lengths) for a training step: padded with gradients for a trainable encoder, else a
        list of [T_i, dim] (lengths None)."""
        if self.trainable:
            return self.encoder.forward([load_audio(p, RATE).samples for p in paths])
        return self.get(paths), None

    def get(self, paths: list[str]) -> list[torch.Tensor]:
        """No-grad features, [T_i, dim] each: the form track() takes (a FeatureSource)."""
        if self.cache is not None:
            return self.cache.get(paths)
        return EncoderFeatures(self.encoder).get(paths)


def _source(spec: DataSpec) -> DialogueSource:
    """Where a recipe's data set reads its dialogues (the rest of DataSpec says what is made of them)."""
    return DialogueSource(manifest=spec.manifest, corpus=spec.corpus, path=spec.path, limit=spec.limit)


def rendered(name: str, spec: DataSpec, out: str | Path) -> DataSpec:
    """TTS augmentation: the set's user turns rendered (once; resumable) and used as a speech manifest."""
    dialogues, _ = load_dialogues(_source(spec))
    manifest = synthesize_manifest(dialogues, Path(out) / "rendered" / name, spec.render.tts,
                                   spec.render.voices)
    return spec.model_copy(update={"manifest": str(manifest), "corpus": None, "path": None,
                                   "modality": "speech", "render": None, "limit": None})


def load_set(name: str, spec: DataSpec, count_tokens, out: str | Path = ".") -> list:
    """A named data set as Examples (use: dst) or AsrItems (use: asr); drops are reported, never silent."""
    if spec.render is not None:
        spec = rendered(name, spec, out)
    if spec.use == "asr":
        if not spec.manifest:
            raise SpokenTODError(f"data.{name}: an ASR set needs a manifest (ours or lhotse)")
        items = load_asr_items(spec.manifest)
        return items[: spec.limit] if spec.limit else items
    dialogues, root = load_dialogues(_source(spec))
    examples, report = make_examples(dialogues, spec.modality, root, spec.filters, count_tokens)
    if report.counts:
        print(f"data.{name}: {len(examples)} examples; dropped {report.summary()}")
    return examples


def group_dialogues(examples: list[Example]) -> list[list[Example]]:
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(e.dialogue_id, []).append(e)
    return [sorted(g, key=lambda e: e.turn) for g in groups.values()]
