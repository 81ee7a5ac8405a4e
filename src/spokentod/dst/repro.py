"""The issue-8 reproduction recipe: does joint training with target-domain *text* lift target-domain JGA on
spoken dialogues? One config (configs/dst/repro_*.yaml), one command, five resumable stages:

    spokentod dst repro configs/dst/repro_multiwoz.yaml [--out DIR] [--stage prepare|phase1|train|eval|report|all]
                        [--set key=value ...]

prepare  MultiWOZ 2.1 dialogues (the given files pooled) → split by domain (dst.data.split_by_domain) into
         source-only, target-only and mixed dialogues (mixed ones are left out and counted) → seeded,
         dialogue-disjoint train/dev/test splits per side (test drawn first, then dev, then train, so growing
         the training set never changes the test set) → user turns rendered with the embedded TTS
         (synthesize_manifest: resumable): training speech in one voice set, dev/test speech in voices never
         used for training, the S+TTS copy of the target text in a third → frozen-encoder features computed
         once into the feature cache. Writes <out>/data/<set>/manifest.jsonl, references.jsonl,
         <out>/data/split.json.
phase1   ASR pre-training of the connector on the source training speech, once; every condition starts from
         <out>/shared/phase1/best (init_from).
train    Each condition × seed: the base recipe + the condition's losses, trained by train.train_phase
         (resumes from <run>/phase2/last; a finished run is skipped).
eval     Each run's best checkpoint tracks every test set (predicted history, batched across dialogues) and
         is scored by score.score_files (bootstrap CI over dialogues, per domain, WER, slot-key F1); the
         cascade's Whisper transcripts are made once per test set. Predictions already written (with a
         done-marker naming the checkpoint's hash) are not redone. Paired bootstrap of every condition
         against the baseline (per seed and seeds pooled) → <out>/results.json.
report   repro_report.write_report → the markdown report with its plots.

Every stage appends its wall time to <out>/timings.json; <out>/repro.json holds the resolved config and
every command that ran on this out dir. A killed run continues where it stopped when the same command is
run again; a changed config that would make finished work stale is refused with the differing fields named.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spokentod.errors import SpokenTODError

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


# ---------------------------------------------------------------------------------------------- config


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
    source_domains: list[str] = Field(min_length=1)
    target_domains: list[str] = Field(min_length=1)
    split_seed: int = 0
    dialogues: Sizes
    max_user_turns: int | None = Field(default=None, ge=1)  # keep only the first N user turns (tests)
    render: Render
    features: bool = True  # compute the frozen encoder's features here, once, into the feature cache


class EvalMode(_Cfg):
    mode: Literal["speech", "text_encoder", "text_direct", "none"] = "speech"
    asr: dict[str, Any] | None = None  # an ASR backend config ({name: whisper-ct2, ...}): a cascade


class Condition(_Cfg):
    all_seeds: bool = False  # run every seed in `seeds` (the main contrast); else the first only
    losses: list[dict[str, Any]] = Field(min_length=1)  # spokentod.dst.recipe.LossSpec, data from DATA_NAMES
    phase2: dict[str, Any] = Field(default_factory=dict)  # overrides of base.phase2 (keep budgets equal!)
    eval: EvalMode = Field(default_factory=EvalMode)


class Contrast(_Cfg):
    baseline: str = "S"
    treatment: str = "S+T"
    test_set: str = "target_test"


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
    base: dict[str, Any]  # a spokentod.dst.recipe.RecipeConfig without data/out/seed/init_from/phase2.losses
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
        if self.contrast.test_set not in self.eval.test_sets:
            raise ValueError(f"contrast.test_set {self.contrast.test_set!r} is not in eval.test_sets")
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


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name) or "_"


def _index(key: str) -> int | str:
    return int(key) if re.fullmatch(r"-?\d+", key) else key


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """`a.b.0.c=v`: dict keys, or list positions where the node is a list."""
    keys = [_index(k) for k in dotted.split(".")]
    node: Any = tree
    for k in keys[:-1]:
        if isinstance(node, list):
            node = node[k]
        else:
            node = node.setdefault(k, {})
    if isinstance(node, list):
        node[keys[-1]] = value
    else:
        node[keys[-1]] = value


def parse_repro(data: Any, where: str, overrides: list[str] = ()) -> ReproConfig:
    import yaml

    data = copy.deepcopy(dict(data or {}))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ReproError(f"--set {item!r}: expected key=value")
        try:
            set_dotted(data, key, yaml.safe_load(raw))
        except (IndexError, KeyError, TypeError, ValueError) as e:
            raise ReproError(f"--set {item!r}: {e}") from None
    try:
        cfg = ReproConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{where}: {'.'.join(map(str, x['loc'])) or '<root>'}: {x['msg']}" for x in e.errors()]
        raise ReproError("bad repro config:\n  " + "\n  ".join(lines)) from None
    try:  # every condition must make a valid training recipe: fail now, not after an hour of phase 1
        phase1_recipe(cfg, Path(cfg.out))
        for c, s in cfg.runs():
            condition_recipe(cfg, Path(cfg.out), c, s)
    except SpokenTODError as e:
        raise ReproError(f"{where}: {e}") from None
    return cfg


def load_repro(path: str | os.PathLike, overrides: list[str] = ()) -> ReproConfig:
    from spokentod.config_file import read_yaml

    return parse_repro(read_yaml(path, ReproError, ""), str(path), overrides)


# ---------------------------------------------------------------------------------------------- layout


def data_dir(out: Path) -> Path:
    return out / "data"


def run_dir(out: Path, condition: str, seed: int) -> Path:
    return out / "runs" / slug(condition) / f"seed{seed}"


def eval_dir(out: Path, condition: str, seed: int, test_set: str) -> Path:
    return out / "eval" / slug(condition) / f"seed{seed}" / test_set


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
    from spokentod.dst.recipe import RecipeError, parse_recipe

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
    from spokentod.dst.recipe import RecipeError, parse_recipe

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


# ---------------------------------------------------------------------------------------------- bookkeeping


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _atomic_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b), key=str)
                for p in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".") or "<root>"]


class Timings:
    """<out>/timings.json: every stage invocation (wall time, what it did or skipped) and per-unit totals."""

    def __init__(self, out: Path):
        self.path = out / "timings.json"
        self.data = _read_json(self.path) or {"invocations": [], "stages": {}, "units": {}}

    def save(self) -> None:
        self.data["total_wall_s"] = sum(self.data["stages"].values())
        _atomic_json(self.path, self.data)

    def unit(self, key: str, seconds: float) -> None:
        self.data["units"][key] = self.data["units"].get(key, 0.0) + seconds
        self.save()

    @contextlib.contextmanager
    def stage(self, name: str, command: str | None) -> Iterator[dict]:
        work: dict[str, Any] = {}
        t0, started = time.perf_counter(), _now()
        record = {"stage": name, "started": started, "command": command, "work": work, "finished": False}
        self.data["invocations"].append(record)
        try:
            yield work
            record["finished"] = True
        finally:
            wall = time.perf_counter() - t0
            record["wall_s"] = round(wall, 3)
            self.data["stages"][name] = self.data["stages"].get(name, 0.0) + wall
            self.save()


# ---------------------------------------------------------------------------------------------- prepare


def _load_pool(p: Prepare) -> list:
    from spokentod.data import corpora

    pool, seen = [], {}
    for path in p.paths:
        for d in corpora.load(p.corpus, path):
            if d.id in seen:
                raise ReproError(f"dialogue id {d.id!r} is in both {seen[d.id]} and {path}")
            seen[d.id] = path
            pool.append(d)
    return pool


def _truncate(d, max_user_turns: int | None):
    if max_user_turns is None or len(d.user_turns) <= max_user_turns:
        return d
    last = d.user_turns[max_user_turns - 1].index
    return d.model_copy(update={"turns": d.turns[: last + 1]})


def assign_splits(source: list, target: list, sizes: Sizes, seed: int) -> dict[str, list]:
    """Seeded, dialogue-disjoint splits: per side a permutation of the sorted ids; test first, then dev,
    then train (so a larger train set keeps the same test and dev dialogues)."""
    out: dict[str, list] = {}
    for side, group, key in (("source", source, 0), ("target", target, 1)):
        ordered = sorted(group, key=lambda d: d.id)
        perm = np.random.default_rng([seed, key]).permutation(len(ordered))
        queue = [ordered[i] for i in perm]
        n_test, n_dev = getattr(sizes, f"{side}_test"), getattr(sizes, f"{side}_dev")
        n_train = getattr(sizes, f"{side}_train")
        need = n_test + n_dev + (n_train or 1)
        if need > len(queue):
            raise ReproError(f"prepare.dialogues: {side} test+dev+train need {need} dialogues, the pool has "
                             f"{len(queue)} {side}-only dialogues")
        out[f"{side}_test"] = queue[:n_test]
        out[f"{side}_dev"] = queue[n_test:n_test + n_dev]
        rest = queue[n_test + n_dev:]
        out[f"{side}_train"] = rest if n_train is None else rest[:n_train]
    return out


def _render(raw_manifest: Path, out_dir: Path, v: Voices, progress: bool) -> Path:
    from spokentod.data.synth import synthesize_manifest

    return synthesize_manifest(raw_manifest, out_dir, v.tts, list(v.voices), tts_config=v.tts_config or None,
                               progress=progress)


def _write_references(examples, path: Path) -> None:
    lines = [json.dumps({"dialogue_id": e.dialogue_id, "turn": e.turn, "state": e.state,
                         "transcript": e.transcript}, ensure_ascii=False) + "\n" for e in examples]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def _prepare_key(cfg: ReproConfig, out: Path) -> dict:
    return {"prepare": cfg.prepare.model_dump(mode="json"),
            "encoder": cfg.base.get("model", {}).get("encoder"), "features": feature_root(cfg, out)}


def prepare(cfg: ReproConfig, out: Path, progress: bool = True, timings: Timings | None = None) -> dict:
    """Split, write text manifests, render speech, compute features, write references and split.json."""
    from spokentod.data.manifest import read_manifest, write_manifest
    from spokentod.dst.data import Filters, make_examples, split_by_domain

    p, d = cfg.prepare, data_dir(out)
    key, need = _prepare_key(cfg, out), used_sets(cfg)
    done = _read_json(d / "prepare.done")
    if done is not None:
        if done.get("key") != key:
            raise ReproError(f"{d} was prepared with another config ({', '.join(_diff(done.get('key'), key))} "
                             f"differ); use a new --out or delete {d}")
        if need <= set(done.get("sets", [])):
            return {"skipped": True}
        # A condition now needs a set that was not made: the split is deterministic, so prepare again
        # (what exists is kept: rendering and features skip finished files).
    t0 = time.perf_counter()
    pool = _load_pool(p)
    src_doms, tgt_doms = set(p.source_domains), set(p.target_domains)
    split = split_by_domain(pool, src_doms, tgt_doms)
    splits = assign_splits(split.source, split.target, p.dialogues, p.split_seed)
    splits = {k: [_truncate(x, p.max_user_turns) for x in v] for k, v in splits.items()}
    raw = d / "raw"
    for name, dialogues in splits.items():
        write_manifest(raw / f"{name}.jsonl", dialogues)
    write_manifest(raw / "dev.jsonl", splits["source_dev"] + splits["target_dev"])
    split_s = time.perf_counter() - t0

    jobs = [("source_train", raw / "source_train.jsonl", p.render.train),
            ("dev", raw / "dev.jsonl", p.render.heldout),
            ("source_test", raw / "source_test.jsonl", p.render.heldout),
            ("target_test", raw / "target_test.jsonl", p.render.heldout)]
    if TARGET_SPEECH in need:
        jobs.insert(1, ("target_train", raw / "target_train.jsonl", p.render.train))
    if TARGET_TTS in need:
        jobs.insert(2, ("target_tts", raw / "target_train.jsonl", p.render.augment))
    render_s: dict[str, float] = {}
    for name, src, voices in jobs:
        t = time.perf_counter()
        if progress:
            print(f"prepare: rendering {name} with {voices.tts} {voices.voices}", flush=True)
        _render(src, d / name, voices, progress)
        render_s[name] = time.perf_counter() - t
        if timings:
            timings.unit(f"prepare:render:{name}", render_s[name])

    # What every set holds, and what the default filters drop from it (nothing is dropped silently).
    examples: dict[str, dict] = {}
    audio: list[str] = []
    for name, _, _ in jobs:
        m = d / name / "manifest.jsonl"
        exs, rep = make_examples(read_manifest(m), "speech", m.parent, Filters())
        examples[name] = rep.as_dict() | {"audio_s": round(sum(e.duration or 0 for e in exs), 1)}
        audio += [e.audio for e in exs]
        if name in ("dev", "source_test", "target_test"):
            _write_references(exs, d / name / "references.jsonl")
    for name in ("source_train", "target_train"):
        _, rep = make_examples(read_manifest(raw / f"{name}.jsonl"), "text", None, Filters())
        examples[f"{name} (text)"] = rep.as_dict()

    feat_s = 0.0
    if p.features and audio:
        from spokentod.dst.encoders import build_encoder
        from spokentod.dst.features import FeatureCache
        from spokentod.dst.model import ModelConfig

        t = time.perf_counter()
        enc_cfg = ModelConfig.model_validate(cfg.base.get("model", {})).encoder
        if not enc_cfg.freeze:
            feat_s = 0.0  # a trainable encoder is never cached
        else:
            cache = FeatureCache(build_encoder(enc_cfg), feature_root(cfg, out), progress=progress)
            if progress:
                print(f"prepare: encoder features for {len(audio)} utterances (cached ones are skipped)", flush=True)
            for i in range(0, len(audio), 64):  # chunks: each file is stored as soon as it is computed
                cache.get(audio[i:i + 64])
            feat_s = time.perf_counter() - t
            if timings:
                timings.unit("prepare:features", feat_s)

    def count(group):
        return {"dialogues": len(group), "user_turns": sum(len(x.user_turns) for x in group)}

    info = {
        "corpus": p.corpus, "paths": p.paths, "pool": count(pool),
        "source_domains": sorted(src_doms), "target_domains": sorted(tgt_doms),
        "source_only": count(split.source), "target_only": count(split.target),
        "mixed_left_out": count(split.mixed), "no_domain_left_out": count(split.no_domain),
        "split_seed": p.split_seed, "max_user_turns": p.max_user_turns,
        "splits": {k: count(v) | {"ids": [x.id for x in v]} for k, v in splits.items()},
        "voices": {name: {"tts": v.tts, "voices": v.voices, "tts_config": v.tts_config} for name, _, v in jobs},
        "examples": examples,
        "seconds": {"split": round(split_s, 2), "render": {k: round(v, 2) for k, v in render_s.items()},
                    "features": round(feat_s, 2)},
        "utterances_encoded": len(audio),
    }
    _atomic_json(d / "split.json", info)
    _atomic_json(d / "prepare.done", {"key": key, "sets": sorted(need), "at": _now()})
    return {"skipped": False, "utterances": len(audio), **info["seconds"]}


# ---------------------------------------------------------------------------------------------- training


def _finished(recipe, n: int) -> bool:
    phase = recipe.phase1 if n == 1 else recipe.phase2
    d = Path(recipe.out) / f"phase{n}"
    s = _read_json(d / "summary.json")
    return bool(s) and (s.get("stopped_early") or s.get("step", 0) >= phase.steps) \
        and (d / "best" / "model.json").is_file()


def _check_recipe(recipe) -> None:
    """<run>/recipe.json pins the recipe a run was started with: resuming under another one is refused."""
    path = Path(recipe.out) / "recipe.json"
    now = recipe.model_dump(mode="json")
    old = _read_json(path)
    if old is not None and old != now:
        raise ReproError(f"{recipe.out} was trained with another recipe ({', '.join(_diff(old, now))} differ); "
                         f"delete {recipe.out} (and its eval results) or use a new --out")
    if old is None:
        _atomic_json(path, now)


def run_phase1(cfg: ReproConfig, out: Path, progress: bool = True, timings: Timings | None = None) -> dict:
    from spokentod.dst.train import train_phase

    recipe = phase1_recipe(cfg, out)
    if recipe is None:
        return {"skipped": True, "why": "no phase1 in base"}
    _check_recipe(recipe)
    if _finished(recipe, 1):
        return {"skipped": True}
    t = time.perf_counter()
    summary = train_phase(recipe, 1, resume=True, progress=progress)
    if timings:
        timings.unit("phase1", time.perf_counter() - t)
    return {"skipped": False, "step": summary["step"], "best": summary["best"]}


def run_train(cfg: ReproConfig, out: Path, progress: bool = True, timings: Timings | None = None) -> dict:
    from spokentod.dst.train import train_phase

    if cfg.base.get("phase1") and not (out / "shared" / "phase1" / "best" / "model.json").is_file():
        raise ReproError(f"no phase-1 checkpoint at {out / 'shared/phase1/best'}: run --stage phase1 first")
    trained, skipped = [], []
    for condition, seed in cfg.runs():
        recipe = condition_recipe(cfg, out, condition, seed)
        name = f"{condition}/seed{seed}"
        _check_recipe(recipe)
        if _finished(recipe, 2):
            skipped.append(name)
            continue
        if progress:
            print(f"train: {name}", flush=True)
        t = time.perf_counter()
        train_phase(recipe, 2, resume=True, progress=progress)
        if timings:
            timings.unit(f"train:{name}", time.perf_counter() - t)
        trained.append(name)
    return {"trained": trained, "skipped": skipped}


# ---------------------------------------------------------------------------------------------- evaluation


def _device(cfg: ReproConfig) -> str:
    import torch

    want = cfg.base.get("device", "auto")
    return "cuda" if torch.cuda.is_available() and want in ("auto", "cuda") else "cpu"


def _groups(manifest: Path):
    from spokentod.data.manifest import read_manifest
    from spokentod.dst.data import DropReport, Filters, dialogue_examples

    report = DropReport()
    groups = dialogue_examples(read_manifest(manifest), "speech", manifest.parent,
                               Filters(max_audio_s=None, require_state=False), report=report)
    return groups, report


def _asr_texts(cfg: ReproConfig, out: Path, spec: dict, test_set: str, groups, progress: bool,
               timings: Timings | None) -> dict[tuple[str, int], str]:
    """The cascade's first stage, once per (ASR config, test set): <out>/eval/asr/<name>/<set>.json."""
    import jiwer

    from spokentod.backends.base import create
    from spokentod.dst.infer import transcribe_turns
    from spokentod.metrics.text import normalize_for_wer

    manifest = data_dir(out) / test_set / "manifest.jsonl"
    key = {"asr": spec, "manifest": file_hash(manifest)}
    path = out / "eval" / "asr" / _hash(spec) / f"{test_set}.json"
    cached = _read_json(path)
    if cached is not None and cached.get("key") == key:
        return {(d, t): x for d, t, x in cached["texts"]}
    t0 = time.perf_counter()
    texts, errors = transcribe_turns(create("asr", dict(spec)), groups, progress)
    exs = [e for g in groups for e in g]
    refs = [normalize_for_wer(e.transcript) or "<empty>" for e in exs]
    wer = float(jiwer.wer(refs, [normalize_for_wer(texts[(e.dialogue_id, e.turn)]) for e in exs]))
    seconds = time.perf_counter() - t0
    _atomic_json(path, {"key": key, "wer": wer, "errors": [f"{d}:{t}: {m}" for (d, t), m in errors.items()],
                        "seconds": seconds, "texts": [[d, t, x] for (d, t), x in texts.items()]})
    if timings:
        timings.unit(f"eval:asr:{test_set}", seconds)
    return texts


class _Eval:
    """Shared by every run of the eval stage: one encoder and feature cache, test sets loaded once."""

    def __init__(self, cfg: ReproConfig, out: Path, progress: bool, timings: Timings | None):
        self.cfg, self.out, self.progress, self.timings = cfg, out, progress, timings
        self.device = _device(cfg)
        self._features = None
        self._sets: dict[str, tuple] = {}

    def test_set(self, name: str):
        if name not in self._sets:
            self._sets[name] = _groups(data_dir(self.out) / name / "manifest.jsonl")
        return self._sets[name]

    def features(self, model):
        if self._features is None:
            from spokentod.dst.encoders import build_encoder
            from spokentod.dst.features import FeatureCache
            from spokentod.dst.infer import EncoderFeatures

            enc = build_encoder(model.cfg.encoder.model_copy(update={"device": self.device}))
            self._features = (EncoderFeatures(enc) if getattr(enc, "trainable", False)
                              else FeatureCache(enc, feature_root(self.cfg, self.out), progress=self.progress))
        return self._features


def _track_key(cfg: ReproConfig, out: Path, checkpoint: Path, mode: EvalMode, test_set: str) -> dict:
    return {"weights": file_hash(checkpoint / "trainable.safetensors"),
            "mode": mode.model_dump(mode="json"), "manifest": file_hash(data_dir(out) / test_set / "manifest.jsonl"),
            "history": cfg.eval.history, "max_new_tokens": cfg.eval.max_new_tokens}


def run_eval(cfg: ReproConfig, out: Path, progress: bool = True, timings: Timings | None = None) -> dict:
    from spokentod.dst.infer import TrackStats, track, write_predictions
    from spokentod.dst.model import SpeechDST

    ev = _Eval(cfg, out, progress, timings)
    tracked, skipped = [], []
    for condition, seed in cfg.runs():
        checkpoint = run_dir(out, condition, seed) / "phase2" / "best"
        if not (checkpoint / "model.json").is_file():
            raise ReproError(f"no checkpoint {checkpoint}: run --stage train first")
        mode = cfg.conditions[condition].eval
        model = None
        for test_set in cfg.eval.test_sets:
            d = eval_dir(out, condition, seed, test_set)
            key = _track_key(cfg, out, checkpoint, mode, test_set)
            name = f"{condition}/seed{seed}/{test_set}"
            done = _read_json(d / "predictions.done")
            if done is not None and done.get("key") == key and (d / "predictions.jsonl").is_file():
                skipped.append(name)
                continue
            (d / "predictions.done").unlink(missing_ok=True)
            groups, report = ev.test_set(test_set)
            user_texts = None
            if mode.asr:
                user_texts = _asr_texts(cfg, out, mode.asr, test_set, groups, progress, timings)
            if model is None:
                model = SpeechDST.from_pretrained(checkpoint, device=ev.device)
            if progress:
                print(f"eval: {name}", flush=True)
            t = time.perf_counter()
            stats = TrackStats()
            preds = track(model, groups, mode.mode, ev.features(model) if mode.mode == "speech" else None,
                          cfg.eval.history, cfg.eval.batch_size, cfg.eval.max_new_tokens, 1, user_texts,
                          progress, stats)
            write_predictions(preds, d / "predictions.jsonl")
            seconds = time.perf_counter() - t
            _atomic_json(d / "track.json", {"stats": stats.as_dict(), "dropped": report.as_dict(), "key": key})
            _atomic_json(d / "predictions.done", {"key": key, "at": _now(), "seconds": seconds})
            if timings:
                timings.unit(f"eval:{name}", seconds)
            tracked.append(name)
        del model
    t = time.perf_counter()
    results = collect_results(cfg, out)
    _atomic_json(out / "results.json", results)
    return {"tracked": tracked, "skipped": skipped, "scoring_s": round(time.perf_counter() - t, 2)}


# ---------------------------------------------------------------------------------------------- scoring


def _ontology(spec: str, refs):
    from spokentod.dst import normalize as N
    from spokentod.dst import ontology as O

    if spec == "auto":
        spec = O.guess({N.canonical_domain(it[0]) for d in refs for t in d for it in t.items})
    return O.load(spec, None, True)


# Per-dialogue (numerator, denominator) of each compared metric: pooled over dialogues they give the file's
# score (JGA = right turns / turns; micro F1 = 2 tp / (predicted + gold slots)).
PAIRED_METRICS = ("jga", "slot_f1", "slot_key_f1")


def dialogue_counts(pred_path: Path, ref_path: Path, ontology: str) -> dict[str, dict[str, tuple[int, int]]]:
    """Per reference dialogue: {metric: (numerator, denominator)}, scored exactly as score_files scores the
    whole file (same ontology, thresholds, policy), one dialogue at a time — for paired bootstraps."""
    from spokentod.dst import normalize as N
    from spokentod.dst.ontology import Matcher
    from spokentod.dst.score import read_predictions, read_references, score

    refs = read_references(ref_path)
    preds = read_predictions(pred_path)
    matcher = Matcher(_ontology(ontology, refs), 90.0, 80.0, N.DEFAULT_POLICY)
    out = {}
    for dlg in refs:
        if dlg:
            r = score([dlg], preds, matcher)
            slots = int(r["slot_pred"] + r["slot_gold"])
            out[dlg[0].dialogue_id] = {"jga": (round(r["jga"] * r["turns"]), int(r["turns"])),
                                       "slot_f1": (2 * int(r["slot_tp"]), slots),
                                       "slot_key_f1": (2 * int(r["slot_key_tp"]), slots)}
    return out


def paired_bootstrap(base: list[dict[str, tuple[float, float]]], treat: list[dict[str, tuple[float, float]]],
                     samples: int, seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """metric(treat) − metric(base) for a pooled ratio metric (sum of numerators / sum of denominators, e.g.
    JGA or micro F1) with a percentile CI, dialogues resampled with replacement. Each list holds one
    per-dialogue table {id: (numerator, denominator)} per seed (paired by position: same seed). Seeds are
    pooled by averaging a dialogue's numerator and denominator over them, so the dialogue stays the
    resampling unit."""
    if not base or len(base) != len(treat):
        raise ValueError("paired_bootstrap needs the same number (>0) of seeds on both sides")
    ids = sorted(base[0])
    for table in base + treat:
        if sorted(table) != ids:
            raise ValueError("paired_bootstrap: the runs scored different dialogues")

    def side(tables):
        arr = np.array([[t[i] for i in ids] for t in tables], dtype=float).reshape(len(tables), len(ids), 2)
        return arr.mean(axis=0).T  # (numerators, denominators) per dialogue

    (an, ad), (bn, bd) = side(base), side(treat)

    def ratio(num, den):
        return num.sum(-1) / np.maximum(den.sum(-1), 1e-12)

    out: dict[str, Any] = {"diff": float(ratio(bn, bd) - ratio(an, ad)), "base_value": float(ratio(an, ad)),
                           "treatment_value": float(ratio(bn, bd)), "dialogues": len(ids),
                           "samples": samples, "level": ci}
    if samples > 0 and ids:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(ids), size=(samples, len(ids)))
        stats = ratio(bn[idx], bd[idx]) - ratio(an[idx], ad[idx])
        lo, hi = np.quantile(stats, [(1 - ci) / 2, 1 - (1 - ci) / 2])
        out |= {"ci": [float(lo), float(hi)], "p_not_greater": float(np.mean(stats <= 0))}
    return out


def collect_results(cfg: ReproConfig, out: Path) -> dict[str, Any]:
    """Score every tracked (run, test set), then the paired comparisons; the content of results.json."""
    from spokentod.dst.score import score_files

    rows, counts = [], {}
    for condition, seed in cfg.runs():
        rd = run_dir(out, condition, seed)
        summary = _read_json(rd / "phase2" / "summary.json", {})
        evals = [json.loads(x) for x in _lines(rd / "phase2" / "eval.jsonl")]
        for test_set in cfg.eval.test_sets:
            d = eval_dir(out, condition, seed, test_set)
            pred, ref = d / "predictions.jsonl", data_dir(out) / test_set / "references.jsonl"
            if not (d / "predictions.done").is_file():
                continue
            s = score_files(pred, ref, ontology=cfg.eval.ontology, bootstrap=cfg.eval.bootstrap, seed=0)
            per = dialogue_counts(pred, ref, cfg.eval.ontology)
            counts[(condition, seed, test_set)] = per
            right, turns = (sum(c["jga"][k] for c in per.values()) for k in (0, 1))
            track_info = _read_json(d / "track.json", {})
            _atomic_json(d / "score.json", s)
            rows.append({
                "condition": condition, "seed": seed, "test_set": test_set,
                **{k: s.get(k) for k in ("jga", "jga_ci", "jga_exact", "slot_f1", "slot_key_f1", "wer",
                                         "entity_wer", "turns", "dialogues", "missing_turns",
                                         "malformed_records", "per_domain", "per_domain_turns")},
                "per_dialogue_consistent": turns == s["turns"] and abs(right / max(turns, 1) - s["jga"]) < 1e-9,
                "repaired": track_info.get("stats", {}).get("repaired"),
                "parse_errors": track_info.get("stats", {}).get("parse_errors"),
                "track_s": track_info.get("stats", {}).get("wall_s"),
                "best_step": summary.get("best_step"), "steps": summary.get("step"),
                "dev_best": (summary.get("best") or [None])[0] if isinstance(summary.get("best"), list)
                else summary.get("best"),  # the best dev JGA (its slot-F1 tie-breaker left out)
                "dev_curve": [{"step": e["step"], "jga": e.get("jga")} for e in evals],
                "mode": cfg.conditions[condition].eval.mode, "asr": cfg.conditions[condition].eval.asr,
            })
    comparisons = []
    base = cfg.contrast.baseline
    for condition in cfg.conditions:
        if condition == base:
            continue
        for test_set in cfg.eval.test_sets:
            seeds = [s for s in cfg.seeds_of(condition) if s in cfg.seeds_of(base)
                     and (base, s, test_set) in counts and (condition, s, test_set) in counts]
            if not seeds:
                continue
            entry = {"baseline": base, "treatment": condition, "test_set": test_set, "seeds": seeds}

            def tables(cond, metric, which=seeds, test_set=test_set):
                return [{i: c[metric] for i, c in counts[(cond, s, test_set)].items()} for s in which]

            try:
                entry["pooled"] = paired_bootstrap(tables(base, "jga"), tables(condition, "jga"),
                                                   cfg.eval.bootstrap)
                entry["per_seed"] = {str(s): paired_bootstrap(tables(base, "jga", [s]),
                                                              tables(condition, "jga", [s]), cfg.eval.bootstrap)
                                     for s in seeds}
                # secondary: more sensitive than JGA when every JGA is near 0; the verdict stays on JGA
                entry["secondary"] = {m: paired_bootstrap(tables(base, m), tables(condition, m),
                                                          cfg.eval.bootstrap)
                                      for m in PAIRED_METRICS if m != "jga"}
            except ValueError as e:
                entry["error"] = str(e)
            entry["main"] = (condition == cfg.contrast.treatment and test_set == cfg.contrast.test_set)
            comparisons.append(entry)
    asr = {}
    for p in sorted((out / "eval" / "asr").glob("*/*.json")):
        a = _read_json(p, {})
        asr[f"{p.parent.name}/{p.stem}"] = {"asr": a.get("key", {}).get("asr"), "test_set": p.stem,
                                            "wer": a.get("wer"), "errors": len(a.get("errors", []))}
    return {"rows": rows, "comparisons": comparisons, "asr": asr,
            "contrast": cfg.contrast.model_dump(), "seeds": cfg.seeds,
            "bootstrap": cfg.eval.bootstrap, "ontology": cfg.eval.ontology, "at": _now()}


def _lines(path: Path) -> list[str]:
    try:
        return [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------- driver


def _record_command(cfg: ReproConfig, out: Path, config_path: str | None, command: str | None) -> None:
    path = out / "repro.json"
    info = _read_json(path) or {"commands": []}
    info["config_path"] = config_path
    info["config"] = cfg.model_dump(mode="json")
    info["commands"].append({"command": command, "at": _now()})
    _atomic_json(path, info)


def run(cfg: ReproConfig, stage: str = "all", out: str | os.PathLike | None = None,
        report: str | os.PathLike | None = None, progress: bool = True, config_path: str | None = None,
        command: str | None = None) -> dict[str, Any]:
    """Run one stage or all of them in order; returns {stage: what it did}."""
    if stage not in (*STAGES, "all"):
        raise ReproError(f"--stage must be one of {', '.join(STAGES)} or all, got {stage!r}")
    out = Path(out or cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _record_command(cfg, out, config_path, command)
    timings = Timings(out)
    done: dict[str, Any] = {}
    for name in STAGES if stage == "all" else (stage,):
        with timings.stage(name, command) as work:
            if name == "prepare":
                work.update(prepare(cfg, out, progress, timings))
            elif name == "phase1":
                work.update(run_phase1(cfg, out, progress, timings))
            elif name == "train":
                work.update(run_train(cfg, out, progress, timings))
            elif name == "eval":
                work.update(run_eval(cfg, out, progress, timings))
            else:
                from spokentod.dst.repro_report import write_report

                path = write_report(out, report or cfg.report)
                work.update({"report": str(path)})
        done[name] = work
    return done
