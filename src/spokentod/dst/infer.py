"""Multi-turn inference for SpeechDST: dialogue by dialogue, turn by turn, batched across dialogues.

A turn's history is the dialogue's earlier turns: agent texts are gold, user texts are this dialogue's own
*predicted* transcripts (``history="predicted"``, what a deployed tracker sees) or the gold ones
(``history="gold"``). Batching never lets one dialogue's predictions reach another's history (the seed's
reference code kept one running history per batch position, so at batch > 1 dialogues bled into each
other): each dialogue keeps its own predictions, and a step takes the *next* turn of up to ``batch_size``
active dialogues. When a dialogue ends its slot takes the next dialogue from the queue (continuous
refill), so a long dialogue never leaves the other slots idle. Because the model's generate is batch
invariant (left padding with matching masks and positions, padding-free connector), the predictions do
not depend on batch size or on which dialogues share a batch (tests/test_dst_infer.py checks both).

Writers: our predictions JSONL and the MultiWOZ_Evaluation input JSON; ``spokentod dst score`` reads both.
A turn whose tracker call failed (``error`` set, ``state`` None) is written with ``"state": null``, so the
scorer counts it as a missing prediction rather than as an empty state (which can be right early in a
dialogue).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field

from spokentod.atomic import atomic_write, write_json
from spokentod.errors import SpokenTODError
from spokentod.progress import progress_bar

HistoryMode = Literal["predicted", "gold"]
TEXT_MODES = ("text_encoder", "text_direct", "none")


class FeatureSource(Protocol):
    """A FeatureCache, or anything that maps audio paths to encoder features ([T_i, dim] each)."""

    def get(self, audio_paths: list[str]) -> list[torch.Tensor]: ...


@dataclass
class TurnPrediction:
    dialogue_id: str
    turn: int  # Turn.index of the user turn (both speakers counted)
    ordinal: int  # 0-based count of user turns
    transcript: str
    state: dict | None  # None when the tracker call failed (see error)
    raw: str | None = None  # the model's text before parsing
    repaired: bool = False  # the JSON had to be repaired (parse_output)
    error: str | None = None  # parse failure, or a failed backend call (then state is None)

    def record(self) -> dict[str, Any]:
        """Our predictions JSONL record (optional fields only when set)."""
        r: dict[str, Any] = {"dialogue_id": self.dialogue_id, "turn": self.turn, "transcript": self.transcript,
                             "state": self.state}
        if self.raw is not None:
            r["raw"] = self.raw
        if self.repaired:
            r["repaired"] = True
        if self.error:
            r["error"] = self.error
        return r


@dataclass
class TrackStats:
    """What a tracking run counted and how long its parts took (seconds); ``track.json`` holds it."""

    turns: int = 0
    dialogues: int = 0
    batches: int = 0
    repaired: int = 0
    parse_errors: int = 0  # outputs parse_output could not read (state {} or partial, error set)
    failed: int = 0  # turns with no prediction (state None): backend errors
    gold_history_fallbacks: int = 0  # earlier user turns with no prediction (not tracked): gold text used
    features_s: float = 0.0
    prefix_s: float = 0.0
    generate_s: float = 0.0
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, p: TurnPrediction) -> None:
        self.turns += 1
        self.repaired += bool(p.repaired)
        if p.state is None:
            self.failed += 1
        elif p.error:
            self.parse_errors += 1

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k != "extra"}
        d["turns_per_s"] = self.turns / self.wall_s if self.wall_s else None
        return d | self.extra


# --------------------------------------------------------------------------------------- history


def predicted_history(ex, predictions: dict[int, TurnPrediction], stats: TrackStats | None = None,
                      ) -> tuple[tuple[str, str], ...]:
    """The example's gold history with each earlier user turn's text replaced by this dialogue's predicted
    transcript. ``predictions`` maps Turn.index → prediction of the *same* dialogue only. A user turn with no
    prediction (dropped by a filter, e.g. no audio) keeps its gold text and is counted."""
    hist = tuple(ex.history)
    by_index = len(hist) == ex.turn  # history = every earlier turn, so its position is the Turn.index
    ordered = sorted(predictions.values(), key=lambda p: p.ordinal)
    by_ordinal = {p.ordinal: p for p in ordered}
    out, k = [], 0
    for j, (speaker, text) in enumerate(hist):
        if speaker == "user":
            p = predictions.get(j) if by_index else by_ordinal.get(k)
            k += 1
            if p is None:
                if stats is not None:
                    stats.gold_history_fallbacks += 1
            else:
                text = p.transcript
        out.append((speaker, text))
    return tuple(out)


def history_for(ex, predictions: dict[int, TurnPrediction], mode: HistoryMode,
                stats: TrackStats | None = None) -> tuple[tuple[str, str], ...]:
    if mode == "gold":
        return tuple(ex.history)
    if mode == "predicted":
        return predicted_history(ex, predictions, stats)
    raise ValueError(f"history must be 'predicted' or 'gold', not {mode!r}")


# --------------------------------------------------------------------------------------- scheduling


def interleave(dialogues: Sequence[Sequence[Any]], batch_size: int) -> Iterable[list[tuple[int, int]]]:
    """Continuous refill: yields steps, each a list of (dialogue number, position in that dialogue) holding
    the next turn of up to ``batch_size`` active dialogues. A dialogue's turns come in order, one per step,
    and the step that yields turn k of a dialogue comes after the one that yielded its turn k-1 has been
    consumed (the caller records predictions between steps)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    queue = deque(i for i, d in enumerate(dialogues) if len(d))
    active: list[list[int]] = []  # [dialogue number, next position]
    while queue or active:
        while queue and len(active) < batch_size:
            active.append([queue.popleft(), 0])
        yield [(d, pos) for d, pos in active]
        for slot in active:
            slot[1] += 1
        active = [s for s in active if s[1] < len(dialogues[s[0]])]


# --------------------------------------------------------------------------------------- tracking


def _parse(text: str):
    from spokentod.dst.parse import parse_output

    return parse_output(text)


def track(model, dialogues: Sequence[Sequence[Any]], prefix_mode: str = "speech",
          features: FeatureSource | None = None, history: HistoryMode = "predicted", batch_size: int = 8,
          max_new_tokens: int = 160, num_beams: int = 1,
          user_texts: dict[tuple[str, int], str] | None = None, progress: bool = True,
          stats: TrackStats | None = None,
          on_prediction: Callable[[TurnPrediction], None] | None = None) -> list[TurnPrediction]:
    """Track every dialogue (a list of its Examples in turn order, e.g. data.dialogue_examples) with a
    SpeechDST. Returns one TurnPrediction per example, dialogue by dialogue in input order.

    prefix_mode "speech" takes features for each turn's audio from ``features``; the text modes take the
    user text from ``user_texts[(dialogue_id, turn)]`` (e.g. ASR transcripts: a cascade) or else the gold
    transcript. ``stats`` (a TrackStats) is filled when given; ``on_prediction`` sees each prediction as
    it is made (for streaming writers)."""
    if history not in ("predicted", "gold"):
        raise ValueError(f"history must be 'predicted' or 'gold', not {history!r}")
    if prefix_mode == "speech" and features is None:
        raise ValueError("prefix_mode 'speech' needs features (a FeatureCache or an object with .get(paths))")
    if prefix_mode not in ("speech", *TEXT_MODES):
        raise ValueError(f"unknown prefix mode {prefix_mode!r} (speech, text_encoder, text_direct, none)")
    for d in dialogues:
        for a, b in pairwise(d):
            if a.dialogue_id != b.dialogue_id or a.turn >= b.turn:
                raise ValueError(f"dialogue {a.dialogue_id!r}: examples must be one dialogue in turn order "
                                 f"(turn {a.turn} then {b.dialogue_id}:{b.turn})")
    stats = stats if stats is not None else TrackStats()
    stats.dialogues += sum(1 for d in dialogues if len(d))
    done: list[dict[int, TurnPrediction]] = [{} for _ in dialogues]  # per dialogue: Turn.index → prediction
    t_start = time.perf_counter()
    was_training = model.training
    model.eval()  # dropout off in the connector / text encoder before any prefix is computed
    try:
        _run(model, dialogues, prefix_mode, features, history, batch_size, max_new_tokens, num_beams,
             user_texts, progress, stats, on_prediction, done)
    finally:
        model.train(was_training)  # a caller validating mid-training gets its mode back
    stats.wall_s += time.perf_counter() - t_start
    return [done[i][ex.turn] for i, d in enumerate(dialogues) for ex in d]


def _run(model, dialogues, prefix_mode, features, history, batch_size, max_new_tokens, num_beams, user_texts,
         progress, stats, on_prediction, done) -> None:
    total = sum(len(d) for d in dialogues)
    with progress_bar("tracking", unit="turns", disable=not progress) as bar, torch.no_grad():
        task = bar.add_task("track", total=total)
        for step in interleave(dialogues, batch_size):
            exs = [dialogues[d][pos] for d, pos in step]
            prompts = [model.dst_prompt(history_for(ex, done[d], history, stats)) for (d, _), ex in zip(step, exs)]
            texts = [(user_texts or {}).get((ex.dialogue_id, ex.turn), ex.transcript) for ex in exs]
            t0 = time.perf_counter()
            if prefix_mode == "speech":
                missing = [f"{ex.dialogue_id}:{ex.turn}" for ex in exs if not ex.audio]
                if missing:
                    raise SpokenTODError(f"prefix mode 'speech' needs audio; these turns have none: {missing[:5]}")
                feats = features.get([ex.audio for ex in exs])
                t1 = time.perf_counter()
                prefix, lengths = model.prefix("speech", feats)
            else:
                t1 = t0
                prefix, lengths = model.prefix(prefix_mode, texts=texts)
            t2 = time.perf_counter()
            outs = model.generate(prefix, lengths, prompts, max_new_tokens=max_new_tokens, num_beams=num_beams)
            t3 = time.perf_counter()
            stats.features_s += t1 - t0
            stats.prefix_s += t2 - t1
            stats.generate_s += t3 - t2
            stats.batches += 1
            for (d, _), ex, text in zip(step, exs, outs):
                parsed = _parse(text)
                p = TurnPrediction(ex.dialogue_id, ex.turn, ex.ordinal, parsed.transcript, parsed.state,
                                   raw=text, repaired=bool(parsed.repaired), error=parsed.error)
                done[d][ex.turn] = p
                stats.count(p)
                if on_prediction is not None:
                    on_prediction(p)
            bar.advance(task, len(exs))


# --------------------------------------------------------------------------------------- ASR (cascade)


def transcribe_turns(asr, dialogues: Sequence[Sequence[Any]], progress: bool = True,
                     ) -> tuple[dict[tuple[str, int], str], dict[tuple[str, int], str]]:
    """A cascade's first stage: each example's user audio through an ASR backend. Returns (texts, errors),
    both keyed by (dialogue_id, turn); a failed call gives the empty text (never the gold one) and an
    error message naming the audio file."""
    texts: dict[tuple[str, int], str] = {}
    errors: dict[tuple[str, int], str] = {}
    exs = [ex for d in dialogues for ex in d]
    with progress_bar("transcribing", unit="turns", disable=not progress) as bar:
        task = bar.add_task("asr", total=len(exs))
        for ex in exs:
            key = (ex.dialogue_id, ex.turn)
            if not ex.audio:
                errors[key] = f"no audio for {ex.dialogue_id}:{ex.turn}"
                texts[key] = ""
            else:
                try:
                    texts[key] = asr.transcribe(ex.audio).text.strip()
                except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                    errors[key] = f"asr: {type(e).__name__}: {e} ({ex.audio})"
                    texts[key] = ""
            bar.advance(task)
    return texts, errors


# --------------------------------------------------------------------------------------- writers


def _grouped(preds: Iterable[TurnPrediction]) -> dict[str, list[TurnPrediction]]:
    out: dict[str, list[TurnPrediction]] = {}
    for p in preds:
        out.setdefault(p.dialogue_id, []).append(p)
    for turns in out.values():
        turns.sort(key=lambda p: p.turn)
    return out


def write_predictions(preds: Iterable[TurnPrediction], path: str | os.PathLike) -> Path:
    """Our JSONL: one {"dialogue_id", "turn" (Turn.index), "transcript", "state"} per user turn, plus "raw",
    "repaired", "error" when set. Read by ``spokentod dst score`` (default --turn-index index)."""
    lines = [json.dumps(p.record(), ensure_ascii=False) + "\n" for p in preds]
    return atomic_write(path, "".join(lines))


def active_domains(state: dict | None) -> list[str]:
    """Domains with at least one slot in the predicted state."""
    return sorted(d for d, slots in (state or {}).items() if isinstance(slots, dict) and slots)


def write_multiwoz_eval(preds: Iterable[TurnPrediction], path: str | os.PathLike) -> Path:
    """MultiWOZ_Evaluation input: {dialogue_id: [{"state", "active_domains"}, ...]}, one entry per user
    turn in order. Ids are lower-cased without ".json" (as that tool writes them). Entries are placed by
    ordinal; a user turn that was not tracked (an ordinal gap) or whose call failed gets ``"state": null``
    (scored missing), so later turns keep their positions."""
    from spokentod.dst.score import dialogue_key

    out: dict[str, list[dict[str, Any]]] = {}
    for did, turns in _grouped(preds).items():
        key = dialogue_key(did)
        if key in out:
            raise SpokenTODError(f"dialogue ids {did!r} and another one collide as {key!r} in MultiWOZ format")
        by_ord = {p.ordinal: p for p in turns}
        entries = []
        for k in range(max(by_ord) + 1):
            p = by_ord.get(k)
            if p is None:
                entries.append({"state": None, "error": "not tracked"})
                continue
            e: dict[str, Any] = {"state": p.state, "active_domains": active_domains(p.state)}
            if p.transcript:
                e["transcript"] = p.transcript
            if p.error:
                e["error"] = p.error
            entries.append(e)
        out[key] = entries
    return write_json(path, out, indent=1, ensure_ascii=False)


# --------------------------------------------------------------------------------------- a whole run


class EncoderFeatures:
    """Features straight from the encoder, for an encoder the on-disk cache refuses (a trainable one)."""

    def __init__(self, encoder):
        self.encoder = encoder

    def get(self, audio_paths: list[str]) -> list[torch.Tensor]:
        from spokentod.audio import load_audio
        from spokentod.dst.encoders import RATE

        return self.encoder.encode([load_audio(p, RATE).samples for p in audio_paths])


class TrackSettings(BaseModel):
    """Everything ``spokentod dst track`` takes; recorded in track.json."""

    model_config = ConfigDict(extra="forbid")
    out: Path
    manifest: Path | None = None
    corpus: str | None = None
    path: Path | None = None
    tracker: Literal["model", "prompted"] = "model"
    checkpoint: Path | None = None
    mode: str | None = None  # model: speech|text_encoder|text_direct|none; prompted: text|audio
    asr: str | None = None
    history: Literal["predicted", "gold"] = "predicted"
    batch_size: int = Field(8, ge=1)
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


def load_dialogues(manifest: Path | None, corpus: str | None, path: Path | None, limit: int | None = None):
    """(dialogues, audio_root): a manifest's relative audio paths resolve against its folder; corpus loaders
    give absolute paths."""
    from collections import Counter

    if manifest is not None:
        from spokentod.data.manifest import read_manifest

        dialogues, root = list(read_manifest(manifest)), Path(manifest).resolve().parent
    else:
        from spokentod.data import corpora

        dialogues, root = corpora.load(corpus, path), None
    if limit:
        dialogues = dialogues[:limit]
    dup = [i for i, c in Counter(d.id for d in dialogues).items() if c > 1]
    if dup:
        raise SpokenTODError(f"{manifest or path}: dialogue ids are not unique ({dup[:5]}); predictions could "
                             "not be told apart")
    return dialogues, root


def _backend(kind: str, spec: str, use_cache: bool):
    from spokentod.backends.base import create
    from spokentod.dst.prompted import backend_spec

    b = create(kind, backend_spec(spec))
    if use_cache:
        from spokentod.backends.cache import cached

        b = cached(b)
    return b


def run_track(settings) -> dict[str, Any]:
    """One ``spokentod dst track`` run: load, (transcribe), track, write OUT/predictions.jsonl,
    OUT/multiwoz_eval.json and OUT/track.json. Returns track.json's content."""
    from spokentod.dst.data import DropReport, Filters, dialogue_examples

    s = settings if isinstance(settings, TrackSettings) else TrackSettings.model_validate(settings)
    mode = _check(s)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    dialogues, root = load_dialogues(s.manifest, s.corpus, s.path, s.limit)
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
        from spokentod.dst.model import SpeechDST

        t = time.perf_counter()
        model = SpeechDST.from_pretrained(s.checkpoint, device=s.device)
        features = None
        if mode == "speech":
            from spokentod.dst.encoders import build_encoder
            from spokentod.dst.features import FeatureCache

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
        preds = track(model, groups, mode, features, s.history, s.batch_size, s.max_new_tokens, s.beams,
                      user_texts, s.progress, stats)
        if hasattr(features, "stats"):
            info["feature_cache"] = features.stats()
    else:
        from spokentod.backends.base import GenParams
        from spokentod.dst import ontology as O
        from spokentod.dst.prompted import PromptedTracker, select_shots

        t = time.perf_counter()
        backend = _backend("audiolm" if s.audiolm else "llm", s.audiolm or s.llm, s.cache)
        onto_name = s.ontology
        if onto_name == "auto":
            onto_name = O.guess({d for g in groups for ex in g for d in ex.state})
        onto = O.load(onto_name, s.data_dir)
        shots, excluded = [], 0
        if s.shots:
            train, troot = load_dialogues(s.shots_manifest, s.shots_corpus, s.shots_path)
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
        "settings": s.model_dump(mode="json") | {"mode": mode},
        "tracker": info,
        "counts": {"dialogues": stats.dialogues, "turns": stats.turns, "repaired": stats.repaired,
                   "parse_errors": stats.parse_errors, "failed": stats.failed,
                   "gold_history_fallbacks": stats.gold_history_fallbacks,
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

