"""A ``spokentod dst track`` run: check the options, load the dialogues, transcribe them for a cascade, track
them with a trained model or a prompted backend, and write OUT/predictions.jsonl, OUT/multiwoz_eval.json
and OUT/track.json.

The model tracker and the prompted tracker modules import torch: they are imported inside run_track, so
that the ``spokentod`` entry point (which loads this package for every command) stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spokentod.atomic import write_json
from spokentod.backends.base import GenParams, create
from spokentod.backends.cache import cached
from spokentod.backends.spec import parse_backend_spec
from spokentod.data import DialogueSource, load_dialogues
from spokentod.dst.data import ontology as O
from spokentod.dst.data.examples import DropReport, Filters, dialogue_examples
from spokentod.dst.model.config import TEXT_MODES
from spokentod.errors import SpokenTODError


class TrackSettings(BaseModel):
    """Everything ``spokentod dst track`` takes; recorded in track.json."""

    model_config = ConfigDict(extra="forbid")
    out: Path
    manifest: Path | None = None
    corpus: str | None = None
    path: Path | None = None
    tracker: Literal["model", "prompted", "embedded"] = "model"
    checkpoint: Path | None = None
    mode: str | None = None  # model: speech|text_encoder|text_direct|none; prompted: text|audio
    asr: str | None = None
    history: Literal["predicted", "gold"] = "predicted"
    batch_size: int = Field(32, ge=1)
    beams: int = Field(1, ge=1)
    max_new_tokens: int = Field(160, ge=1)
    limit: int | None = Field(None, ge=1)
    llm: str | None = None
    audiolm: str | None = None
    shots: int = Field(0, ge=0)
    shots_manifest: Path | None = None
    shots_corpus: str | None = None
    shots_path: Path | None = None
    seed: int = 0
    ontology: str = "auto"
    data_dir: Path | None = None
    workers: int = Field(1, ge=1)
    device: str = "cpu"
    feature_cache: Path | None = None
    cache: bool = True
    max_audio_s: float | None = Field(None, gt=0)
    progress: bool = True


def _check(s) -> str:
    """Validate option combinations; returns the resolved mode."""
    if (s.manifest is None) == (s.corpus is None):
        raise SpokenTODError("give exactly one of --manifest (our dialogue JSONL) or --corpus NAME --path P")
    if s.tracker == "model":
        if s.checkpoint is None:
            raise SpokenTODError("--tracker model needs --checkpoint DIR (a SpeechDST save_pretrained folder)")
        if not (Path(s.checkpoint) / "model.json").is_file():
            raise SpokenTODError(f"--checkpoint {s.checkpoint} is not a SpeechDST checkpoint (no model.json)")
        if s.llm or s.audiolm or s.shots:
            raise SpokenTODError("--llm, --audiolm and --shots belong to --tracker prompted")
        mode = s.mode or "speech"
        if mode not in ("speech", *TEXT_MODES):
            raise SpokenTODError(f"--mode {mode!r}: the model tracker takes speech, text_encoder, text_direct "
                                 "or none")
        if s.asr and mode == "speech":
            raise SpokenTODError("--asr gives text for a text mode (a cascade): use it with --mode text_direct, "
                                 "text_encoder or none")
        return mode
    if bool(s.llm) == bool(s.audiolm):
        raise SpokenTODError("--tracker prompted needs exactly one of --llm SPEC or --audiolm SPEC")
    if s.checkpoint is not None:
        raise SpokenTODError("--checkpoint belongs to --tracker model")
    mode = s.mode or ("audio" if s.audiolm and not s.asr else "text")
    if mode not in ("text", "audio"):
        raise SpokenTODError(f"--mode {mode!r}: the prompted tracker takes text or audio")
    if mode == "audio" and (s.llm or s.asr):
        raise SpokenTODError("--mode audio sends the user's audio to an --audiolm; --llm and --asr read text")
    if s.shots and (s.shots_manifest is None) == (s.shots_corpus is None):
        raise SpokenTODError("--shots N needs exactly one source of training dialogues: --shots-manifest M or "
                             "--shots-corpus NAME --shots-path P")
    return mode


def _source(manifest: Path | None, corpus: str | None, path: Path | None) -> DialogueSource:
    """The dialogues a track run reads (--manifest, or --corpus + --path; the same for --shots-*)."""
    return DialogueSource(manifest=manifest and str(manifest), corpus=corpus, path=path and str(path))


def _backend(kind: str, spec: str, use_cache: bool):
    b = create(kind, parse_backend_spec(spec))
    if use_cache:
        b = cached(b)
    return b


def run_track(settings) -> dict[str, Any]:
    """One ``spokentod dst track`` run: load, (transcribe), track, write OUT/predictions.jsonl,
    OUT/multiwoz_eval.json and OUT/track.json. Returns track.json's content."""
    from spokentod.dst.infer.predictions import write_multiwoz_eval, write_predictions  # torch: see the top
    from spokentod.dst.infer.track import TrackStats, track, transcribe_turns
    s = settings if isinstance(settings, TrackSettings) else TrackSettings.model_validate(settings)
    shipped = None
    if s.tracker == "embedded":  # the package's own tracker: a model checkpoint run the way its sidecar says
        from spokentod.dst.infer import embedded

        if s.checkpoint is not None:
            raise SpokenTODError("--tracker embedded brings its own weights: drop --checkpoint")
        shipped = embedded.sidecar()
        mode = s.mode or shipped["mode"]
        s = s.model_copy(update={"tracker": "model", "checkpoint": embedded.EMBEDDED, "mode": mode,
                                 "asr": s.asr or (shipped.get("asr") if mode == shipped["mode"] else None)})
    mode = _check(s)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    dialogues, root = load_dialogues(_source(s.manifest, s.corpus, s.path), s.limit)
    modality = "speech" if mode in ("speech", "audio") or s.asr else "text"
    report = DropReport()
    # Inference tracks every user turn: no state needed (its prediction is scored only where the reference
    # has one), and no length cut unless asked. Whatever is dropped is counted in track.json.
    groups = dialogue_examples(dialogues, modality, root, Filters(max_audio_s=s.max_audio_s, require_state=False),
                               report=report)
    if not groups:
        raise SpokenTODError(f"no user turns to track in {s.manifest or s.path}: {report.summary()}")
    timings["load_s"] = time.perf_counter() - t

    user_texts = asr_errors = None
    if s.asr:
        t = time.perf_counter()
        asr = _backend("asr", s.asr, s.cache)
        user_texts, asr_errors = transcribe_turns(asr, groups, s.progress)
        timings["asr_s"] = time.perf_counter() - t

    stats = TrackStats()
    info: dict[str, Any] = {}
    if s.tracker == "model":
        from spokentod.dst.model.encoders import build_encoder
        from spokentod.dst.model.features import EncoderFeatures, FeatureCache
        from spokentod.dst.model.speechdst import SpeechDST

        t = time.perf_counter()
        model = SpeechDST.from_pretrained(s.checkpoint, device=s.device)
        from spokentod.dst.infer.embedded import unused_parts

        lacking = set(model.omitted) - set(unused_parts(mode))  # left out, yet read in this mode
        if lacking:
            raise SpokenTODError(f"{s.checkpoint} leaves out {', '.join(sorted(lacking))} "
                                 f"(it was shipped for --mode {shipped['mode'] if shipped else '?'}): "
                                 f"--mode {mode} cannot run it")
        features = None
        if mode == "speech":
            encoder = getattr(model, "encoder", None) or \
                build_encoder(model.cfg.encoder.model_copy(update={"device": s.device}))
            if getattr(encoder, "trainable", False):
                features = EncoderFeatures(encoder)
                info["encoder_note"] = ("the checkpoint's encoder was fine-tuned (freeze=false): features come "
                                        "from its trained weights, uncached")
            else:
                features = FeatureCache(encoder, s.feature_cache, progress=s.progress)
            info["encoder"] = encoder.identity()
        timings["model_load_s"] = time.perf_counter() - t
        info["model"] = {"checkpoint": str(s.checkpoint), "config": model.cfg.model_dump(mode="json")}
        if shipped:
            info["embedded"] = {k: shipped.get(k) for k in ("mode", "asr", "weights", "measured", "command")}
        preds = track(model, groups, mode, features, s.history, s.batch_size, s.max_new_tokens, s.beams,
                      user_texts, s.progress, stats)
        if hasattr(features, "stats"):
            info["feature_cache"] = features.stats()
    else:
        from spokentod.dst.infer.prompted import PromptedTracker, select_shots

        t = time.perf_counter()
        backend = _backend("audiolm" if s.audiolm else "llm", s.audiolm or s.llm, s.cache)
        onto_name = s.ontology
        if onto_name == "auto":
            onto_name = O.guess({d for g in groups for ex in g for d in ex.state})
        onto = O.load(onto_name, s.data_dir)
        shots, excluded = [], 0
        if s.shots:
            train, troot = load_dialogues(_source(s.shots_manifest, s.shots_corpus, s.shots_path))
            tracked = {g[0].dialogue_id for g in groups}
            pool = [ex for g in dialogue_examples(train, "text", troot) for ex in g]
            kept = [ex for ex in pool if ex.dialogue_id not in tracked]  # never show a tracked dialogue
            excluded = len(pool) - len(kept)
            shots = select_shots(kept, s.shots, s.seed)
        tracker = PromptedTracker(backend, onto, shots, user_input=mode,
                                  params=GenParams(max_tokens=s.max_new_tokens, seed=s.seed),
                                  schema_scope="dialogue" if onto is not None and onto.name == "sgd" else "all",
                                  schema_from=[ex for g in groups for ex in g] if onto is None else ())
        timings["model_load_s"] = time.perf_counter() - t
        info["prompted"] = tracker.identity() | {"ontology_spec": s.ontology,
                                                 "shots_excluded_tracked_turns": excluded}
        if onto is None:
            info["prompted"]["schema_note"] = "no ontology: slot names taken from the tracked dialogues' states"
        preds = tracker.track(groups, s.history, user_texts, s.workers, s.progress, stats)
    timings["track_s"] = stats.wall_s

    t = time.perf_counter()
    write_predictions(preds, out / "predictions.jsonl")
    write_multiwoz_eval(preds, out / "multiwoz_eval.json")
    timings["write_s"] = time.perf_counter() - t
    result = {
        "settings": s.model_dump(mode="json") | {"mode": mode} | ({"tracker": "embedded"} if shipped else {}),
        "tracker": info,
        "counts": {"dialogues": stats.dialogues, "turns": stats.turns, "repaired": stats.repaired,
                   "parse_errors": stats.parse_errors, "failed": stats.failed,
                   "gold_history_fallbacks": stats.gold_history_fallbacks,
                   "gold_state_fallbacks": stats.gold_state_fallbacks,
                   "asr_errors": len(asr_errors or {}), "dropped": report.as_dict()},
        "timings": timings | {k: getattr(stats, k) for k in ("features_s", "prefix_s", "generate_s")}
        | {"turns_per_s": stats.turns / stats.wall_s if stats.wall_s else None, "batches": stats.batches},
        "outputs": {"predictions": str(out / "predictions.jsonl"), "multiwoz_eval": str(out / "multiwoz_eval.json")},
    }
    if asr_errors:
        result["asr_errors"] = [f"{d}:{n}: {e}" for (d, n), e in list(asr_errors.items())[:20]]
    failed = [f"{p.dialogue_id}:{p.turn}: {p.error}" for p in preds if p.state is None][:20]
    if failed:
        result["failed_examples"] = failed
    write_json(out / "track.json", result, indent=1, default=str)
    return result
