"""The reproduction's config (configs/dst/repro_*.yaml) and the training recipes it derives for phase 1
and for each condition × seed (the out dir's layout is in layout.py)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spokentod.config_file import apply_overrides, read_mapping, validate
from spokentod.dst.train.recipe import RecipeError, parse_recipe
from spokentod.errors import SpokenTODError
from spokentod.studies.dst_repro.layout import data_dir, run_dir, slug

STAGES = ("prepare", "phase1", "train", "eval", "report")
# Data sets every condition recipe may name in its losses (prepare makes the ones some condition uses).
SOURCE_SPEECH, SOURCE_TEXT = "source_speech", "source_text"
TARGET_TEXT, TARGET_SPEECH, TARGET_TTS = "target_text", "target_speech", "target_tts"
DATA_NAMES = ("asr", "asr_dev", SOURCE_SPEECH, SOURCE_TEXT, TARGET_TEXT, TARGET_SPEECH, TARGET_TTS, "dev")
TARGET_SETS = (TARGET_TEXT, TARGET_SPEECH, TARGET_TTS)
SPLITS = ("source_train", "source_dev", "source_test", "target_train", "target_dev", "target_test")


class ReproError(SpokenTODError, ValueError):
    """A bad repro config or an out dir that holds work made with another config."""


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Voices(_Cfg):
    tts: str = "espeak"
    voices: list[str] = Field(min_length=1)
    tts_config: dict[str, Any] = Field(default_factory=dict)


class Render(_Cfg):
    train: Voices    # source training speech; the target speech of the Oracle
    heldout: Voices  # dev and test speech: voices never used for training
    augment: Voices  # the target text rendered as speech for S+TTS

    @model_validator(mode="after")
    def _disjoint(self) -> Render:
        def key(v: Voices) -> set:
            return {(v.tts, x, json.dumps(v.tts_config, sort_keys=True)) for x in v.voices}

        if key(self.train) & key(self.heldout):
            raise ValueError("heldout voices must not be training voices: "
                             f"{sorted(set(self.train.voices) & set(self.heldout.voices))}")
        return self


class Sizes(_Cfg):
    """Dialogues per split. A train size of null takes every remaining dialogue of its side."""

    source_train: int | None = Field(ge=1)
    source_dev: int = Field(ge=0)
    source_test: int = Field(ge=1)
    target_train: int | None = Field(ge=1)
    target_dev: int = Field(ge=0)
    target_test: int = Field(ge=1)


class Prepare(_Cfg):
    corpus: str = "multiwoz21"
    paths: list[str] = Field(min_length=1)  # pooled; ids must be unique across them
    # Dev and test dialogues come only from these paths (null: from any). The shipped speech adapter
    # trained on the user turns of MultiWOZ val.json, so an E2E tracker built on it is tested on test.json.
    eval_from: list[str] | None = None
    source_domains: list[str] = Field(min_length=1)
    target_domains: list[str] = Field(min_length=1)
    split_seed: int = 0
    dialogues: Sizes
    max_user_turns: int | None = Field(default=None, ge=1)  # keep only the first N user turns (tests)
    render: Render
    features: bool = True  # compute the frozen encoder's features here, once, into the feature cache

    @model_validator(mode="after")
    def _eval_from(self) -> Prepare:
        bad = [x for x in self.eval_from or [] if x not in self.paths]
        if bad or self.eval_from == []:
            raise ValueError(f"eval_from: each entry must be one of paths {self.paths} (got {self.eval_from})")
        return self


class EvalMode(_Cfg):
    mode: Literal["speech", "text_encoder", "text_direct", "none"] = "speech"
    asr: dict[str, Any] | None = None  # an ASR backend config ({name: whisper-ct2, ...}): a cascade


class Condition(_Cfg):
    all_seeds: bool = False  # run every seed in `seeds` (the main contrast); else the first only
    losses: list[dict[str, Any]] = Field(min_length=1)  # spokentod.dst.train.recipe.LossSpec, data from DATA_NAMES
    phase2: dict[str, Any] = Field(default_factory=dict)  # overrides of base.phase2 (keep budgets equal!)
    eval: EvalMode = Field(default_factory=EvalMode)


class Contrast(_Cfg):
    baseline: str = "S"
    treatment: str = "S+T"
    test_set: str = "target_test"
    # The power goal: the 95 % CI of treatment - baseline no wider than +-this (JGA, a fraction). The report
    # says whether the run met it.
    max_half_width: float = Field(0.06, gt=0, le=1)
    # Every condition trains on this test set's domains: each must beat the empty-state floor there (CIs
    # disjoint) for its other results to mean something.
    in_domain: str = "source_test"


class Evaluation(_Cfg):
    test_sets: list[str] = Field(default_factory=lambda: ["target_test", "source_test"])
    batch_size: int = Field(16, ge=1)  # dialogues tracked side by side
    max_new_tokens: int = Field(128, ge=1)
    history: Literal["predicted", "gold"] = "predicted"
    bootstrap: int = Field(1000, ge=0)
    ontology: str = "multiwoz"

    @model_validator(mode="after")
    def _sets(self) -> Evaluation:
        bad = [s for s in self.test_sets if s not in ("source_test", "target_test")]
        if bad or not self.test_sets:
            raise ValueError(f"test_sets: choose from source_test, target_test (got {self.test_sets})")
        return self


class ReproConfig(_Cfg):
    out: str = "runs/dst/repro"
    report: str = "reports/dst_repro.md"
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    target_weight: float = Field(1.0, ge=0)  # weight of every loss on target-domain data (unless it sets one)
    prepare: Prepare
    base: dict[str, Any]  # a spokentod.dst.train.recipe.RecipeConfig without data/out/seed/init_from/phase2.losses
    conditions: dict[str, Condition] = Field(min_length=1)
    contrast: Contrast = Field(default_factory=Contrast)
    eval: Evaluation = Field(default_factory=Evaluation)

    @model_validator(mode="after")
    def _check(self) -> ReproConfig:
        for k in ("data", "out", "seed", "init_from"):
            if k in self.base:
                raise ValueError(f"base.{k} is set by the repro recipe; leave it out")
        if not isinstance(self.base.get("phase2"), dict):
            raise ValueError("base.phase2: the phase-2 settings every condition shares")  # noqa: TRY004 (pydantic)
        if "losses" in self.base["phase2"]:
            raise ValueError("base.phase2.losses: losses belong to each condition")
        for c in (self.contrast.baseline, self.contrast.treatment):
            if c not in self.conditions:
                raise ValueError(f"contrast: no condition named {c!r} (have {list(self.conditions)})")
        for field in ("test_set", "in_domain"):
            if getattr(self.contrast, field) not in self.eval.test_sets:
                raise ValueError(f"contrast.{field} {getattr(self.contrast, field)!r} is not in eval.test_sets")
        sizes = self.prepare.dialogues
        uses_dev = any((self.base.get(ph) or {}).get("dev") for ph in ("phase1", "phase2"))
        if uses_dev and sizes.source_dev + sizes.target_dev == 0:
            raise ValueError("prepare.dialogues: source_dev + target_dev is 0 but base.phase1/phase2 name a dev set")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct: {self.seeds}")
        for name, cond in self.conditions.items():
            for loss in cond.losses:
                if loss.get("data") and loss["data"] not in DATA_NAMES:
                    raise ValueError(f"conditions.{name}.losses: data {loss['data']!r} is not one of {DATA_NAMES}")
        slugs = [slug(n) for n in self.conditions]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"condition names collide as directory names: {slugs}")
        return self

    def seeds_of(self, condition: str) -> list[int]:
        return list(self.seeds) if self.conditions[condition].all_seeds else [self.seeds[0]]

    def runs(self) -> list[tuple[str, int]]:
        return [(c, s) for c in self.conditions for s in self.seeds_of(c)]


def parse_repro(data: Any, where: str, overrides: list[str] = ()) -> ReproConfig:
    """A repro mapping (with ``--set`` overrides applied, list items too: conditions.S.losses[0].weight=2)
    as a ReproConfig, checked further by building every training recipe it derives."""
    cfg = validate(ReproConfig, apply_overrides(data, overrides, ReproError), where, ReproError, "repro")
    try:  # every condition must make a valid training recipe: fail now, not after an hour of phase 1
        phase1_recipe(cfg, Path(cfg.out))
        for c, s in cfg.runs():
            condition_recipe(cfg, Path(cfg.out), c, s)
    except SpokenTODError as e:
        raise ReproError(f"{where}: {e}") from None
    return cfg


def load_repro(path: str | os.PathLike, overrides: list[str] = ()) -> ReproConfig:
    return parse_repro(read_mapping(path, ReproError, ""), str(path), overrides)


# ---------------------------------------------------------------------------------------------- recipes


def feature_root(cfg: ReproConfig, out: Path) -> str:
    return str(cfg.base.get("feature_cache_dir") or out / "features")


def _data_specs(cfg: ReproConfig, out: Path) -> dict[str, dict]:
    d = data_dir(out)
    specs = {
        "asr": {"manifest": str(d / "source_train" / "manifest.jsonl"), "use": "asr"},
        "asr_dev": {"manifest": str(d / "dev" / "manifest.jsonl"), "use": "asr"},
        SOURCE_SPEECH: {"manifest": str(d / "source_train" / "manifest.jsonl"), "modality": "speech"},
        SOURCE_TEXT: {"manifest": str(d / "raw" / "source_train.jsonl"), "modality": "text"},
        TARGET_TEXT: {"manifest": str(d / "raw" / "target_train.jsonl"), "modality": "text"},
        TARGET_SPEECH: {"manifest": str(d / "target_train" / "manifest.jsonl"), "modality": "speech"},
        TARGET_TTS: {"manifest": str(d / "target_tts" / "manifest.jsonl"), "modality": "speech"},
        "dev": {"manifest": str(d / "dev" / "manifest.jsonl"), "modality": "speech"},
    }
    return specs


def _common(cfg: ReproConfig, out: Path) -> dict:
    raw = copy.deepcopy(cfg.base)
    raw["feature_cache_dir"] = feature_root(cfg, out)
    raw["data"] = _data_specs(cfg, out)
    return raw


def phase1_recipe(cfg: ReproConfig, out: Path):
    """The shared phase-1 recipe (None when the base has no phase1)."""
    if not cfg.base.get("phase1"):
        return None
    raw = _common(cfg, out)
    raw.pop("phase2", None)
    raw |= {"out": str(out / "shared"), "seed": cfg.seeds[0]}
    try:
        return parse_recipe(raw, "base (phase 1)")
    except RecipeError as e:
        raise ReproError(str(e)) from None


def condition_recipe(cfg: ReproConfig, out: Path, condition: str, seed: int):
    """base + the condition's losses and overrides → a phase-2 RecipeConfig for one seed."""
    cond = cfg.conditions[condition]
    raw = _common(cfg, out)
    raw.pop("phase1", None)
    losses = []
    for loss in cond.losses:
        loss = dict(loss)
        if "weight" not in loss and loss.get("data") in TARGET_SETS:
            loss["weight"] = cfg.target_weight
        losses.append(loss)
    raw["phase2"] = copy.deepcopy(cfg.base["phase2"]) | copy.deepcopy(cond.phase2) | {"losses": losses}
    raw |= {"out": str(run_dir(out, condition, seed)), "seed": seed}
    if cfg.base.get("phase1"):
        raw["init_from"] = str(out / "shared" / "phase1" / "best")
    try:
        return parse_recipe(raw, f"conditions.{condition}")
    except RecipeError as e:
        raise ReproError(str(e)) from None


def used_sets(cfg: ReproConfig) -> set[str]:
    names = {"dev", "asr", "asr_dev"}
    for cond in cfg.conditions.values():
        names |= {x["data"] for x in cond.losses if x.get("data")}
    return names
