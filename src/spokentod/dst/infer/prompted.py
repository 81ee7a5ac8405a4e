"""Prompted DST baselines: ask any LLM backend (gold text, or ASR transcripts: a cascade) or any AudioLM
backend (the user's audio, like the reference recipe's prompted Gemini baseline) for the same JSON the
trained model emits, ``{"transcript": ..., "state": {domain: {slot: value}}}``, zero-shot or few-shot.

The system prompt lists the schema's domains and slots (values too when a slot has few), taken from an
ontology (data/ontology.py: multiwoz, spokenwoz, sgd, a JSON file). For the MultiWOZ family only the tracked
slots are listed (the value ontology also holds DB columns such as address or phone, which are never
state). Few-shot examples are user/assistant message pairs built from given training Examples, chosen
by a seeded draw so a run is reproducible. Multi-turn tracking follows track.py: the history holds the
dialogue's own earlier *predicted* user transcripts (or gold), never another dialogue's.

A failed backend call is recorded as the turn's ``error`` with ``state`` None (written as null, so the
scorer counts the turn missing) — never as an empty state, which can be right early in a dialogue.
For text input the prediction's transcript is the text the tracker was given (gold or ASR), so a
cascade's WER is its ASR's; for audio input it is the model's own transcript.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from spokentod.backends.base import GenParams, Message
from spokentod.dst.data.examples import Example, HistoryFormat, format_history, target_json
from spokentod.dst.data.ontology import Ontology
from spokentod.dst.infer.parse import parse_output
from spokentod.dst.infer.track import HistoryMode, TrackStats, TurnPrediction, history_for
from spokentod.progress import progress_bar

# MultiWOZ's tracked slots by domain, in canonical names (normalize.py: "book day" → "day"); the value
# ontology adds DB columns (address, phone, postcode, ref, ...) that no state ever holds.
MWZ_STATE_SLOTS: dict[str, tuple[str, ...]] = {
    "attraction": ("area", "name", "type"),
    "hotel": ("area", "day", "internet", "name", "parking", "people", "pricerange", "stars", "stay", "type"),
    "restaurant": ("area", "day", "food", "name", "people", "pricerange", "time"),
    "taxi": ("arriveby", "departure", "destination", "leaveat"),
    "train": ("arriveby", "day", "departure", "destination", "leaveat", "people"),
    "hospital": ("department",),
    "bus": ("day", "departure", "destination", "leaveat"),
    "profile": ("email", "idnumber", "name", "phonenumber", "platenumber"),  # SpokenWOZ
}

INSTRUCTION = """You are a dialogue state tracker for a task-oriented dialogue between a user and an agent.
After the user's latest turn, give the dialogue state: every slot the user has specified so far in the
dialogue (not only in the latest turn), as {{domain: {{slot: value}}}} with the domain and slot names below,
lower-case values in the user's words, times as HH:MM, "dontcare" when the user has no preference.
Leave out slots that were not mentioned.

Domains and slots:
{schema}

Answer with one JSON object and nothing else: {{"transcript": "<the user's latest turn, verbatim>", "state": {{...}}}}"""


def schema_slots(ontology: Ontology | None, extra: Sequence[Example] = ()) -> dict[str, dict[str, list[str]]]:
    """domain → slot → values to show. MultiWOZ-family ontologies are cut to the tracked slots; slots seen
    in `extra` examples' states (the few-shot pool) are added, so the schema covers what they show."""
    values = {d: dict(s) for d, s in (ontology.values if ontology else {}).items()}
    if ontology is not None and ontology.name in ("multiwoz", "spokenwoz"):
        values = {d: {s: values[d].get(s, []) for s in slots} for d, slots in MWZ_STATE_SLOTS.items()
                  if d in values}
    for ex in extra:
        for d, slots in ex.state.items():
            for s in slots:
                values.setdefault(d, {}).setdefault(s, [])
    return {d: dict(sorted(s.items())) for d, s in sorted(values.items()) if s}


def schema_text(slots: dict[str, dict[str, list[str]]], domains: Sequence[str] | None = None,
                max_values: int = 10) -> str:
    """One line per domain: ``- hotel: area (centre | east | ...), day, internet (no | yes), name, ...``;
    a slot's values are listed when it has at most `max_values`."""
    lines = []
    for d, ss in slots.items():
        if domains is not None and d not in domains:
            continue
        parts = [f"{s} ({' | '.join(sorted(set(v)))})" if v and len(set(v)) <= max_values else s
                 for s, v in ss.items()]
        lines.append(f"- {d}: {', '.join(parts)}")
    return "\n".join(lines) if lines else "(no schema given: use short lower-case domain and slot names)"


def select_shots(examples: Sequence[Example], n: int, seed: int = 0) -> list[Example]:
    """`n` few-shot examples drawn with a seeded RNG from the examples with a non-empty state (they show the
    format best). Independent of the input order: candidates are sorted by (dialogue, turn) first."""
    if n <= 0:
        return []
    pool = sorted((e for e in examples if e.state), key=lambda e: (e.dialogue_id, e.turn))
    if len(pool) < n:
        raise ValueError(f"{n} few-shot examples asked for but only {len(pool)} training examples have a state")
    return random.Random(seed).sample(pool, n)


class PromptedTracker:
    """``backend``: an LLM (``chat``) or an AudioLM (``respond``). ``user_input="audio"`` sends the user
    turn's audio (AudioLM only); "text" sends text (gold, or ``user_texts`` from an ASR backend)."""

    def __init__(self, backend: Any, ontology: Ontology | None = None, shots: Sequence[Example] = (),
                 user_input: Literal["text", "audio"] = "text", params: GenParams | None = None,
                 history_format: HistoryFormat | None = None, shot_history_turns: int | None = 4,
                 schema_scope: Literal["all", "dialogue"] = "all", max_values: int = 10,
                 instruction: str = INSTRUCTION, schema_from: Sequence[Example] = ()):
        if user_input not in ("text", "audio"):
            raise ValueError(f"user_input must be 'text' or 'audio', not {user_input!r}")
        self.audiolm = callable(getattr(backend, "respond", None))
        if not self.audiolm and not callable(getattr(backend, "chat", None)):
            raise TypeError(f"{type(backend).__name__} is neither an LLM (chat) nor an AudioLM (respond)")
        if user_input == "audio" and not self.audiolm:
            raise ValueError("user_input='audio' needs an AudioLM backend (one with respond); an LLM reads text")
        if schema_scope not in ("all", "dialogue"):
            raise ValueError(f"schema_scope must be 'all' or 'dialogue', not {schema_scope!r}")
        self.backend, self.user_input, self.shots = backend, user_input, list(shots)
        self.params = params or GenParams(max_tokens=256)
        self.history_format = history_format or HistoryFormat()
        self.shot_format = self.history_format.model_copy(update={"max_turns": shot_history_turns})
        # schema_from: examples whose slot *names* join the schema (e.g. without an ontology)
        self.slots = schema_slots(ontology, [*self.shots, *schema_from])
        self.ontology_name = ontology.name if ontology else None
        self.schema_scope, self.max_values, self.instruction = schema_scope, max_values, instruction

    def identity(self) -> dict[str, Any]:
        ident = getattr(self.backend, "identity", None)
        return {"tracker": "prompted", "backend": ident() if callable(ident) else type(self.backend).__name__,
                "user_input": self.user_input, "ontology": self.ontology_name, "shots": [e.id for e in self.shots],
                "params": self.params.as_dict(), "schema_scope": self.schema_scope}

    # ------------------------------------------------------------------ prompts

    def system_prompt(self, domains: Sequence[str] | None = None) -> str:
        return self.instruction.format(schema=schema_text(self.slots, domains, self.max_values))

    def _turn_text(self, history: Sequence[tuple[str, str]], text: str | None, fmt: HistoryFormat) -> str:
        head = f"Dialogue so far:\n{format_history(history, fmt)}\n\n"
        if text is None:
            return head + "The user's latest turn is the audio. Give the JSON."
        return head + f"User's latest turn: {text}\n\nGive the JSON."

    def messages(self, ex: Example, history: Sequence[tuple[str, str]], user_text: str | None,
                 domains: Sequence[str] | None = None) -> list[Message]:
        """System prompt with the schema, the few-shot pairs (always text), then this turn."""
        msgs: list[Message] = [{"role": "system", "content": self.system_prompt(domains)}]
        for s in self.shots:
            msgs.append({"role": "user", "content": self._turn_text(s.history, s.transcript, self.shot_format)})
            msgs.append({"role": "assistant", "content": target_json(s.transcript, s.state)})
        if self.user_input == "audio":
            if not ex.audio:
                raise ValueError(f"{ex.id}: user_input='audio' but the example has no audio")
            msgs.append({"role": "user", "content": [
                {"type": "text", "text": self._turn_text(history, None, self.history_format)},
                {"type": "audio", "audio": str(ex.audio)}]})
        else:
            msgs.append({"role": "user", "content": self._turn_text(history, user_text, self.history_format)})
        return msgs

    def _call(self, msgs: list[Message]) -> str:
        if self.audiolm:
            return self.backend.respond(msgs, self.params).text
        return self.backend.chat(msgs, self.params).text

    # ------------------------------------------------------------------ tracking

    def track_turn(self, ex: Example, history: Sequence[tuple[str, str]], user_text: str | None = None,
                   domains: Sequence[str] | None = None) -> TurnPrediction:
        text = (user_text if user_text is not None else ex.transcript) if self.user_input == "text" else None
        try:
            raw = self._call(self.messages(ex, history, text, domains))
        except Exception as e:  # noqa: BLE001 - a failed call is this turn's error, the run goes on
            kind = "audiolm" if self.audiolm else "llm"
            return TurnPrediction(ex.dialogue_id, ex.turn, ex.ordinal, text or "", None,
                                  error=f"{kind}: {type(e).__name__}: {e}")
        parsed = parse_output(raw)
        transcript = text if text is not None else parsed.transcript
        return TurnPrediction(ex.dialogue_id, ex.turn, ex.ordinal, transcript, parsed.state, raw=raw,
                              repaired=bool(parsed.repaired), error=parsed.error)

    def track_dialogue(self, dialogue: Sequence[Example], history: HistoryMode = "predicted",
                       user_texts: dict[tuple[str, int], str] | None = None, stats: TrackStats | None = None,
                       on_prediction: Callable[[TurnPrediction], None] | None = None) -> list[TurnPrediction]:
        domains = (sorted({d for ex in dialogue for d in ex.domains} | {d for ex in dialogue for d in ex.state})
                   if self.schema_scope == "dialogue" else None)
        done: dict[int, TurnPrediction] = {}
        for ex in dialogue:
            h = history_for(ex, done, history, stats)
            p = self.track_turn(ex, h, (user_texts or {}).get((ex.dialogue_id, ex.turn)), domains)
            done[ex.turn] = p
            if on_prediction is not None:
                on_prediction(p)
        return [done[ex.turn] for ex in dialogue]

    def track(self, dialogues: Sequence[Sequence[Example]], history: HistoryMode = "predicted",
              user_texts: dict[tuple[str, int], str] | None = None, workers: int = 1, progress: bool = True,
              stats: TrackStats | None = None,
              on_prediction: Callable[[TurnPrediction], None] | None = None) -> list[TurnPrediction]:
        """Every dialogue turn by turn; `workers` dialogues at once (threads: for HTTP backends; an
        in-process model serializes anyway). Output in input order whatever the workers."""
        if history not in ("predicted", "gold"):
            raise ValueError(f"history must be 'predicted' or 'gold', not {history!r}")
        stats = stats if stats is not None else TrackStats()
        t0 = time.perf_counter()
        total = sum(len(d) for d in dialogues)
        with progress_bar("tracking (prompted)", unit="turns", disable=not progress) as bar:
            task = bar.add_task("track", total=total)

            def one(d: Sequence[Example]) -> list[TurnPrediction]:
                def seen(p: TurnPrediction) -> None:
                    bar.advance(task)
                    if on_prediction is not None:
                        on_prediction(p)
                return self.track_dialogue(d, history, user_texts, stats, seen)

            if workers <= 1:
                results = [one(d) for d in dialogues]
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dst-prompted") as pool:
                    results = list(pool.map(one, dialogues))
        out = [p for r in results for p in r]
        for p in out:
            stats.count(p)
        stats.dialogues += sum(1 for d in dialogues if len(d))
        stats.wall_s += time.perf_counter() - t0
        return out
