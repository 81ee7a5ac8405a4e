"""The reproduction's training and evaluation stages and the driver that runs the stages in order (the
data stage is prepare.py; the whole study is described in the package docstring)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jiwer
import torch

from spokentod.adapter import adapter_dir
from spokentod.backends.base import create
from spokentod.data.manifest import read_manifest
from spokentod.dst.data.examples import DropReport, Filters, dialogue_examples
from spokentod.dst.infer.predictions import write_predictions
from spokentod.dst.infer.track import TrackStats, track, transcribe_turns
from spokentod.dst.model.encoders import build_encoder
from spokentod.dst.model.features import EncoderFeatures, FeatureCache
from spokentod.dst.model.speechdst import SpeechDST
from spokentod.dst.train.loop import train_phase
from spokentod.metrics.text import normalize_for_wer
from spokentod.studies.dst_repro.archive import archive, run_files_dir
from spokentod.studies.dst_repro.config import (
    STAGES,
    EvalMode,
    ReproConfig,
    ReproError,
    condition_recipe,
    feature_root,
    phase1_recipe,
)
from spokentod.studies.dst_repro.layout import (
    ADAPTER_PIN,
    ADAPTER_SIDECAR,
    Timings,
    data_dir,
    diff_paths,
    eval_dir,
    file_hash,
    json_hash,
    now_iso,
    read_json,
    run_dir,
    timed,
    train_unit,
    write_json,
)
from spokentod.studies.dst_repro.prepare import prepare
from spokentod.studies.dst_repro.report import write_report
from spokentod.studies.dst_repro.stats import collect_results

# ---------------------------------------------------------------------------------------------- training


def _finished(recipe, n: int) -> bool:
    phase = recipe.phase1 if n == 1 else recipe.phase2
    d = Path(recipe.out) / f"phase{n}"
    s = read_json(d / "summary.json")
    return bool(s) and (s.get("stopped_early") or s.get("step", 0) >= phase.steps) \
        and (d / "best" / "model.json").is_file()


def _pin(path: Path, now: dict) -> dict | None:
    """Pins `now` at `path` the first time; afterwards returns what was pinned if it differs (else None)."""
    old = read_json(path)
    if old is None:
        write_json(path, now)
    return old if old is not None and old != now else None


def _check_recipe(recipe) -> None:
    """<run>/recipe.json pins the recipe a run was started with: resuming under another one is refused."""
    now = recipe.model_dump(mode="json")
    if (old := _pin(Path(recipe.out) / "recipe.json", now)) is not None:
        raise ReproError(f"{recipe.out} was trained with another recipe ({', '.join(diff_paths(old, now))} differ); "
                         f"delete {recipe.out} (and its eval results) or use a new --out")


def _check_adapter(cfg: ReproConfig, out: Path) -> None:
    """Every condition must start phase 2 from the same speech adapter: `speech_adapter: embedded` names
    whatever the package ships, which a re-trained adapter replaces, so <out>/speech_adapter.json pins the
    files a study's first run started from and a resume from other ones is refused."""
    name = cfg.base.get("speech_adapter")
    if not name:
        return
    where = adapter_dir(name)
    now = {"speech_adapter": str(name), "files": {p.name: file_hash(p) for p in sorted(where.glob("*")) if p.is_file()}}
    path = out / ADAPTER_PIN
    if (old := _pin(path, now)) is not None:
        raise ReproError(f"{out}'s runs started phase 2 from another speech adapter than {where} holds now "
                         f"({path}: {old['files']}, now {now['files']}); restore that adapter, or start the study "
                         "afresh with a new --set out=...")
    if not (copy := out / ADAPTER_SIDECAR).is_file() and (where / "adapter.json").is_file():
        # its figures, for the report: a later export replaces the package's copy
        write_json(copy, read_json(where / "adapter.json"))


def run_phase1(cfg: ReproConfig, out: Path, progress: bool = True, timings: Timings | None = None) -> dict:
    recipe = phase1_recipe(cfg, out)
    if recipe is None:
        return {"skipped": True, "why": "no phase1 in base"}
    _check_recipe(recipe)
    if _finished(recipe, 1):
        return {"skipped": True}
    with timed(timings, "phase1"):
        summary = train_phase(recipe, 1, resume=True, progress=progress)
    return {"skipped": False, "step": summary["step"], "best": summary["best"]}


def run_train(cfg: ReproConfig, out: Path, progress: bool = True, timings: Timings | None = None) -> dict:
    if cfg.base.get("phase1") and not (out / "shared" / "phase1" / "best" / "model.json").is_file():
        raise ReproError(f"no phase-1 checkpoint at {out / 'shared/phase1/best'}: run --stage phase1 first")
    _check_adapter(cfg, out)
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
        with timed(timings, train_unit(condition, seed)):
            train_phase(recipe, 2, resume=True, progress=progress)
        trained.append(name)
    return {"trained": trained, "skipped": skipped}


# ---------------------------------------------------------------------------------------------- evaluation


def _device(cfg: ReproConfig) -> str:
    want = cfg.base.get("device", "auto")
    return "cuda" if torch.cuda.is_available() and want in ("auto", "cuda") else "cpu"


def _groups(manifest: Path):
    report = DropReport()
    groups = dialogue_examples(read_manifest(manifest), "speech", manifest.parent,
                               Filters(max_audio_s=None, require_state=False), report=report)
    return groups, report


def _asr_texts(cfg: ReproConfig, out: Path, spec: dict, test_set: str, groups, progress: bool,
               timings: Timings | None) -> dict[tuple[str, int], str]:
    """The cascade's first stage, once per (ASR config, test set): <out>/eval/asr/<name>/<set>.json."""
    manifest = data_dir(out) / test_set / "manifest.jsonl"
    key = {"asr": spec, "manifest": file_hash(manifest)}
    path = out / "eval" / "asr" / json_hash(spec) / f"{test_set}.json"
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
            enc = build_encoder(model.cfg.encoder.model_copy(update={"device": self.device}))
            self._features = (EncoderFeatures(enc) if getattr(enc, "trainable", False)
                              else FeatureCache(enc, feature_root(self.cfg, self.out), progress=self.progress))
        return self._features


def _track_key(cfg: ReproConfig, out: Path, checkpoint: Path, mode: EvalMode, test_set: str) -> dict:
    return {"weights": file_hash(checkpoint / "trainable.safetensors"),
            "mode": mode.model_dump(mode="json"), "manifest": file_hash(data_dir(out) / test_set / "manifest.jsonl"),
            "history": cfg.eval.history, "max_new_tokens": cfg.eval.max_new_tokens}


def run_eval(cfg: ReproConfig, out: Path, progress: bool = True, timings: Timings | None = None) -> dict:
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
                path = Path(report or cfg.report)
                files = archive(out, run_files_dir(path))  # the report is written from what git keeps
                work.update({"report": str(write_report(files, path)), "run_files": str(files)})
        done[name] = work
    return done
