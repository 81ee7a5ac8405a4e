"""Multi-turn inference for SpeechDST: dialogue by dialogue, turn by turn, batched across dialogues.

A turn's history is the dialogue's earlier turns: agent texts are gold, user texts are this dialogue's own
*predicted* transcripts (``history="predicted"``, what a deployed tracker sees) or the gold ones
(``history="gold"``). Batching never lets one dialogue's predictions reach another's history (the reference
implementation kept one running history per batch position, so at batch > 1 dialogues bled into each
other): each dialogue keeps its own predictions, and a step takes the *next* turn of up to ``batch_size``
active dialogues. When a dialogue ends its slot takes the next dialogue from the queue (continuous
refill), so a long dialogue never leaves the other slots idle. Because the model's generate is batch
invariant (left padding with matching masks and positions, padding-free connector), the predictions do
not depend on batch size or on which dialogues share a batch (tests/dst/test_dst_infer.py checks both).

The writers of what tracking produced are in predictions.py; ``spokentod dst track`` (dst/cli.py) runs a
whole tracking run.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import torch

from spokentod.dst.data.transcribe import hear
from spokentod.dst.infer.parse import parse_output
from spokentod.dst.model.config import TEXT_MODES
from spokentod.dst.model.features import FeatureSource
from spokentod.dst.model.modes import eval_mode
from spokentod.errors import SpokenTODError
from spokentod.progress import progress_bar

HistoryMode = Literal["predicted", "gold"]


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
    gold_state_fallbacks: int = 0  # carry_state: previous user turn with no predicted state: gold state used
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


def previous_state(ex, predictions: dict[int, TurnPrediction], mode: HistoryMode,
                   stats: TrackStats | None = None) -> dict:
    """The state before this turn, for a carry_state model: gold with gold history; else this dialogue's own
    prediction for the previous user turn (the gold one, counted as a fallback, when that turn has none)."""
    if mode == "gold" or ex.ordinal == 0:
        return ex.prev_state
    last = next((p for p in predictions.values() if p.ordinal == ex.ordinal - 1 and p.state is not None), None)
    if last is None:
        if stats is not None:
            stats.gold_state_fallbacks += 1
        return ex.prev_state
    return last.state


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
    # dropout off in the connector / text encoder before any prefix is computed; a caller validating
    # mid-training gets its mode back
    with eval_mode(model):
        _run(model, dialogues, prefix_mode, features, history, batch_size, max_new_tokens, num_beams,
             user_texts, progress, stats, on_prediction, done)
    stats.wall_s += time.perf_counter() - t_start
    return [done[i][ex.turn] for i, d in enumerate(dialogues) for ex in d]


def _run(model, dialogues, prefix_mode, features, history, batch_size, max_new_tokens, num_beams, user_texts,
         progress, stats, on_prediction, done) -> None:
    total = sum(len(d) for d in dialogues)
    with progress_bar("tracking", unit="turns", disable=not progress) as bar, torch.no_grad():
        task = bar.add_task("track", total=total)
        for step in interleave(dialogues, batch_size):
            exs = [dialogues[d][pos] for d, pos in step]
            carry = getattr(model.cfg, "carry_state", False)
            prevs = [previous_state(ex, done[d], history, stats) if carry else {} for (d, _), ex in zip(step, exs)]
            prompts = [model.dst_prompt(history_for(ex, done[d], history, stats), prev)
                       for (d, _), ex, prev in zip(step, exs, prevs)]
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
            for (d, _), ex, text, prev in zip(step, exs, outs, prevs):
                parsed = parse_output(text)
                state = model.read_state(parsed.state, prev) if carry else parsed.state
                p = TurnPrediction(ex.dialogue_id, ex.turn, ex.ordinal, parsed.transcript, state,
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
                texts[key], error = hear(asr, ex.audio)
                if error:
                    errors[key] = error
            bar.advance(task)
    return texts, errors
