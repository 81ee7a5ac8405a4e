"""DST training recipe configuration (YAML → pydantic); errors name the file and the YAML field.

    seed: 0
    out: runs/dst/cpu_small
    model: {llm: smollm2, encoder: {kind: whisper-ct2}, connector: {...}, lora: {...}}
    data:                          # named example sets; a manifest (ours, with or without audio) or a corpus
      asr:  {manifest: runs/dst/data/train.jsonl, use: asr}           # phase 1: every turn with audio
      speech_train: {manifest: ..., modality: speech}
      text_train:   {corpus: multiwoz21, path: ../shared/data/..., modality: text, limit: 200}
      dev:          {manifest: ..., modality: speech, limit: 20}
    phase1: {steps: 200, batch_size: 8, lr: 1e-3, warmup: 20, dev: dev}   # or speech_adapter: embedded
    phase2:
      steps: 300
      losses:                      # the reference recipe's three cross-entropies, weights from the config
        - {name: speech, data: speech_train, prefix: speech, weight: 1.0}
        - {name: text, data: text_train, prefix: text_encoder, weight: 1.0}
        - {name: asr_text, batch_of: speech, prefix: text_encoder, weight: 1.0}
      dev: dev

Relative paths are relative to the current directory. ``--set phase2.steps=10`` overrides any field
(``--set phase2.losses[1].weight=8`` reaches list items; see spokentod.config_file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spokentod.config_file import apply_overrides, load_yaml_config, validate
from spokentod.dst.data.examples import Filters
from spokentod.dst.model.config import ModelConfig, PrefixMode
from spokentod.errors import SpokenTODError


class RecipeError(SpokenTODError, ValueError):
    """A bad recipe config; the message names the file and field."""


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RenderSpec(_Cfg):
    """Render the set's user turns with a TTS first and use them as speech (the reference recipe's TTS
    augmentation, its rows D2/D4). Rendering is resumable and lands in <out>/rendered/<set name>."""

    tts: str = "kokoro"
    voices: list[str] | None = None


class DataSpec(_Cfg):
    manifest: str | None = None
    corpus: str | None = None
    path: str | None = None
    modality: Literal["speech", "text"] = "speech"
    use: Literal["dst", "asr"] = "dst"  # asr: every turn with audio as (audio, transcript) — phase 1
    limit: int | None = Field(default=None, ge=1)  # first N dialogues (or ASR items)
    render: RenderSpec | None = None
    filters: Filters = Field(default_factory=Filters)

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.manifest is None) == (self.corpus is None):
            raise ValueError("give exactly one of manifest or corpus")
        return self


class LossSpec(_Cfg):
    name: str
    data: str | None = None      # a key of `data`
    batch_of: str | None = None  # reuse another loss's batch (the reference recipe's CE on the speech transcripts)
    prefix: PrefixMode = "speech"
    weight: float = Field(default=1.0, ge=0)
    batch_size: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> LossSpec:
        if (self.data is None) == (self.batch_of is None):
            raise ValueError(f"loss {self.name!r}: give exactly one of data or batch_of")
        return self


class PhaseConfig(_Cfg):
    steps: int = Field(default=100, ge=0)
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    warmup: int = Field(default=10, ge=0)
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    losses: list[LossSpec] = Field(default_factory=list)  # phase 2; phase 1 is one ASR loss on `data`
    data: str | None = None     # phase 1: the ASR set
    dev: str | None = None      # validation set: JGA (phase 2) or WER (phase 1) on generated outputs
    dev_limit: int | None = Field(default=None, ge=1)
    eval_every: int = Field(default=50, ge=1)
    patience: int | None = Field(default=None, ge=1)  # evaluations without improvement before stopping
    save_every: int = Field(default=50, ge=1)
    max_new_tokens: int = Field(default=160, ge=1)
    # Dev decoding batch (default batch_size): decoding holds no gradients, so a GPU can track many dev
    # dialogues side by side while training keeps a small batch.
    dev_batch_size: int | None = Field(default=None, ge=1)
    log_every: int = Field(default=10, ge=1)


class RecipeConfig(_Cfg):
    seed: int = 0
    out: str = "runs/dst"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: dict[str, DataSpec] = Field(default_factory=dict)
    phase1: PhaseConfig | None = None
    phase2: PhaseConfig | None = None
    init_from: str | None = None  # phase 2 only: start from this phase-1 checkpoint (default: this run's)
    # Phase 2 starts from a trained speech adapter instead of phase 1 ("embedded": the one shipped in the
    # package; or an adapter directory): its connector and CTC head. model.encoder/connector/compress must
    # be the adapter's (checked when phase 2 starts).
    speech_adapter: str | None = None
    device: str = "auto"          # auto: cuda when available
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where the GPU supports it
    feature_cache: bool = True   # frozen encoder: compute features once per utterance (on disk)
    feature_cache_dir: str | None = None  # default: the spokentod cache (SPOKENTOD_CACHE)
    ontology: str = "auto"        # for the dev JGA (see `spokentod dst score --ontology`)

    @model_validator(mode="after")
    def _references(self) -> RecipeConfig:
        for pname in ("phase1", "phase2"):
            ph = getattr(self, pname)
            if ph is None:
                continue
            names = [x for x in [ph.data, ph.dev] + [loss.data for loss in ph.losses] if x]
            for n in names:
                if n not in self.data:
                    raise ValueError(f"{pname}: data set {n!r} is not defined under data (have {sorted(self.data)})")
            own = {loss.name for loss in ph.losses}
            for loss in ph.losses:
                if loss.batch_of and loss.batch_of not in own:
                    raise ValueError(f"{pname}.losses.{loss.name}.batch_of: no loss named {loss.batch_of!r}")
        if self.speech_adapter and (self.phase1 or self.init_from):
            raise ValueError("speech_adapter: phase 2 starts from the adapter, so there is no phase1 / init_from to "
                             "start from as well (drop one)")
        c = self.model.compress
        if c != "none" and self.phase1:
            raise ValueError(f"model.compress: {c} reads the segments of a trained CTC head, which phase1 does not "
                             "train: drop phase1 and set speech_adapter")
        if c != "none" and not (self.speech_adapter or self.init_from):
            raise ValueError(f"model.compress: {c} needs a trained CTC head: set speech_adapter (or init_from a "
                             "checkpoint that has one)")
        if self.phase1 and not self.phase1.data:
            raise ValueError("phase1.data: name the ASR data set")
        if self.phase2 and not self.phase2.losses:
            raise ValueError("phase2.losses: at least one loss")
        return self


def parse_recipe(data: Any, where: str, overrides: list[str] = ()) -> RecipeConfig:
    """A recipe mapping (with ``--set`` overrides applied) as a RecipeConfig; errors name `where`."""
    return validate(RecipeConfig, apply_overrides(data, overrides, RecipeError), where, RecipeError, "recipe")


def load_recipe(path: str | Path, overrides: list[str] = ()) -> RecipeConfig:
    return load_yaml_config(path, RecipeConfig, RecipeError, "recipe", overrides)
