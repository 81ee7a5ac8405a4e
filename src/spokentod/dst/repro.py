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

This file holds the stages and the driver; the config, recipes and out-dir layout are in repro_config.py,
the scoring and paired bootstraps in repro_stats.py, the markdown report in repro_report.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spokentod.dst.repro_config import (
    SPLITS,
    STAGES,
    TARGET_SETS,
    TARGET_SPEECH,
    TARGET_TTS,
    EvalMode,
    Prepare,
    ReproConfig,
    ReproError,
    Sizes,
    Voices,
    condition_recipe,
    data_dir,
    eval_dir,
    feature_root,
    load_repro,
    now_iso,
    parse_repro,
    phase1_recipe,
    read_json,
    run_dir,
    used_sets,
    write_json,
)
from spokentod.dst.repro_stats import collect_results

# what the CLI and the tests use from here, beside the stages (the rest lives in repro_config / repro_stats)
__all__ = [
    "SPLITS",
    "STAGES",
    "TARGET_SETS",
    "ReproConfig",
    "ReproError",
    "Sizes",
    "assign_splits",
    "condition_recipe",
    "eval_dir",
    "load_repro",
    "parse_repro",
    "prepare",
    "run",
    "run_dir",
]

# ---------------------------------------------------------------------------------------------- bookkeeping


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
        self.data = read_json(self.path) or {"invocations": [], "stages": {}, "units": {}}

    def save(self) -> None:
        self.data["total_wall_s"] = sum(self.data["stages"].values())
        write_json(self.path, self.data)

    def unit(self, key: str, seconds: float) -> None:
        self.data["units"][key] = self.data["units"].get(key, 0.0) + seconds
        self.save()

    @contextlib.contextmanager
    def stage(self, name: str, command: str | None) -> Iterator[dict]:
        work: dict[str, Any] = {}
        t0, started = time.perf_counter(), now_iso()
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
    done = read_json(d / "prepare.done")
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
    write_json(d / "split.json", info)
    write_json(d / "prepare.done", {"key": key, "sets": sorted(need), "at": now_iso()})
    return {"skipped": False, "utterances": len(audio), **info["seconds"]}


# ---------------------------------------------------------------------------------------------- training


def _finished(recipe, n: int) -> bool:
    phase = recipe.phase1 if n == 1 else recipe.phase2
    d = Path(recipe.out) / f"phase{n}"
    s = read_json(d / "summary.json")
    return bool(s) and (s.get("stopped_early") or s.get("step", 0) >= phase.steps) \
        and (d / "best" / "model.json").is_file()


def _check_recipe(recipe) -> None:
    """<run>/recipe.json pins the recipe a run was started with: resuming under another one is refused."""
    path = Path(recipe.out) / "recipe.json"
    now = recipe.model_dump(mode="json")
    old = read_json(path)
    if old is not None and old != now:
        raise ReproError(f"{recipe.out} was trained with another recipe ({', '.join(_diff(old, now))} differ); "
                         f"delete {recipe.out} (and its eval results) or use a new --out")
    if old is None:
        write_json(path, now)


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
    cached = read_json(path)
    if cached is not None and cached.get("key") == key:
        return {(d, t): x for d, t, x in cached["texts"]}
    t0 = time.perf_counter()
    texts, errors = transcribe_turns(create("asr", dict(spec)), groups, progress)
    exs = [e for g in groups for e in g]
    refs = [normalize_for_wer(e.transcript) or "<empty>" for e in exs]
    wer = float(jiwer.wer(refs, [normalize_for_wer(texts[(e.dialogue_id, e.turn)]) for e in exs]))
    seconds = time.perf_counter() - t0
    write_json(path, {"key": key, "wer": wer, "errors": [f"{d}:{t}: {m}" for (d, t), m in errors.items()],
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
            done = read_json(d / "predictions.done")
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
            write_json(d / "track.json", {"stats": stats.as_dict(), "dropped": report.as_dict(), "key": key})
            write_json(d / "predictions.done", {"key": key, "at": now_iso(), "seconds": seconds})
            if timings:
                timings.unit(f"eval:{name}", seconds)
            tracked.append(name)
        del model
    t = time.perf_counter()
    results = collect_results(cfg, out)
    write_json(out / "results.json", results)
    return {"tracked": tracked, "skipped": skipped, "scoring_s": round(time.perf_counter() - t, 2)}


# ---------------------------------------------------------------------------------------------- driver


def _record_command(cfg: ReproConfig, out: Path, config_path: str | None, command: str | None) -> None:
    path = out / "repro.json"
    info = read_json(path) or {"commands": []}
    info["config_path"] = config_path
    info["config"] = cfg.model_dump(mode="json")
    info["commands"].append({"command": command, "at": now_iso()})
    write_json(path, info)


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
