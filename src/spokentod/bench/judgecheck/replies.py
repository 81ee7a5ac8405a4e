"""Replies of known quality for `judge-check`: at sampled (dialogue, user turn) positions, the gold agent reply
and corruptions of it that any trustworthy scorer must rank below it.

    gold        the corpus's next agent turn
    off_topic   the agent turn at the same position (the same agent-turn ordinal) of another dialogue,
                preferably one with another intent
    repeat      the agent's previous turn, verbatim
    generic     a filler that fits after anything (FILLERS_V1; deliberately not the genericness metric's own
                reference list GENERIC_V1, which would make that metric's test circular)
    memory      the gold reply contradicting a detail the user gave (details.py): "swap" replaces a detail
                the user stated that the gold reply repeats (Italian -> Thai, 7 pm -> 9 pm, San Jose ->
                Fresno) with a value of the same kind the dialogue never mentioned; where the gold reply
                repeats none, "recall" adds the user's own sentence said back wrongly ("Just to confirm,
                you said you live in Fresno?")

Deterministic: every random choice comes from a generator seeded by (seed, dialogue id, turn, kind), so
the same positions and replies come back whatever else was loaded (a larger --limit adds positions and
off-topic donors; it changes what an existing position's off-topic reply may be drawn from, nothing else).
A corruption that cannot be built at a position is skipped with its reason (no earlier agent turn, no user
detail, no other dialogue); it is never replaced by something else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from spokentod.bench.judgecheck import details as det
from spokentod.data.schema import Speaker

KINDS = ("gold", "off_topic", "repeat", "generic", "memory")
CORRUPTIONS = KINDS[1:]
LABELS = {"gold": "gold", "off_topic": "off-topic", "repeat": "repeat", "generic": "generic", "memory": "memory"}
# The failure type of the judge's taxonomy each corruption is an instance of (its flag rate is reported).
EXPECTED_FAILURE = {"off_topic": "topic_drift", "repeat": "repetition", "generic": "generic", "memory": "memory"}
FILLERS_V1 = (
    "Hmm, alright. I hear you.", "Oh, okay then.", "Right, right. Makes sense.", "Wow, nice!",
    "Cool, cool.", "Got it, thanks.", "Ah, I see what you mean.", "Yeah, totally.", "Interesting, go on.",
    "Mm-hmm, sure thing.", "Fair enough!", "Oh, that's neat.",
)
RECALL_V1 = "Just to confirm, you said {said}?"


@dataclass(frozen=True)
class Position:
    dialogue_id: str
    turn: int  # the user turn's index; the gold reply is turns[turn + 1]
    phase: str | None
    gold: str


@dataclass(frozen=True)
class Candidate:
    kind: str
    dialogue_id: str
    turn: int
    text: str
    info: dict[str, Any] = field(default_factory=dict)  # where it came from (donor, detail swapped...)


@dataclass
class Built:
    positions: list[Position]
    candidates: list[Candidate]
    skipped: list[dict[str, Any]]  # {kind, dialogue_id, turn, reason}

    def by_kind(self, kind: str) -> list[Candidate]:
        return [c for c in self.candidates if c.kind == kind]


def _rng(seed: int, *key: Any) -> random.Random:
    return random.Random(":".join(map(str, (seed, *key))))


def eligible_turns(dialogue: Any) -> list[int]:
    """User turns followed by a non-empty agent turn, with an earlier agent turn (so `repeat` exists)."""
    turns, out = dialogue.turns, []
    for t in turns[:-1]:
        nxt = turns[t.index + 1]
        if (t.speaker == Speaker.user and nxt.speaker == Speaker.agent and nxt.text.strip()
                and any(u.speaker == Speaker.agent and u.text.strip() for u in turns[: t.index])):
            out.append(t.index)
    return out


def sample_positions(dialogue: Any, k: int, seed: int) -> list[Position]:
    pool = eligible_turns(dialogue)
    chosen = sorted(pool if k >= len(pool) else _rng(seed, dialogue.id, "positions").sample(pool, k))
    turns = dialogue.turns
    return [Position(dialogue.id, t, turns[t].phase.value if turns[t].phase else None, turns[t + 1].text.strip())
            for t in chosen]


def _agent_texts(dialogue: Any, before: int | None = None) -> list[str]:
    return [t.text.strip() for t in dialogue.turns[:before] if t.speaker == Speaker.agent and t.text.strip()]


def off_topic(d: Any, pos: Position, dialogues: list[Any], seed: int) -> Candidate | str:
    donors = [x for x in dialogues if x.id != d.id and _agent_texts(x)]
    if not donors:
        return "no other dialogue to take an off-topic reply from (load more than one dialogue)"
    intent = d.intent.type if d.intent else None
    other = [x for x in donors if (x.intent.type if x.intent else None) != intent]
    rng = _rng(seed, d.id, pos.turn, "off_topic")
    ordinal = len(_agent_texts(d, pos.turn + 1))  # the gold reply is this dialogue's agent turn no. ordinal+1
    for donor in rng.sample(other, len(other)) + rng.sample(donors, len(donors)):
        texts = _agent_texts(donor)
        j = min(ordinal, len(texts) - 1)
        if texts[j] != pos.gold:
            return Candidate("off_topic", d.id, pos.turn, texts[j], {"donor": donor.id, "donor_agent_turn": j + 1,
                                                                      "donor_intent": donor.intent.type if donor.intent else None})
    return "every other dialogue's reply at this position equals the gold reply"


def repeat(d: Any, pos: Position) -> Candidate | str:
    prev = _agent_texts(d, pos.turn)[-1]  # eligible positions have one
    if prev == pos.gold:
        return "the gold reply already repeats the previous agent turn"
    return Candidate("repeat", d.id, pos.turn, prev, {"repeats": "previous agent turn"})


def generic(d: Any, pos: Position, seed: int) -> Candidate:
    fillers = [f for f in FILLERS_V1 if f != pos.gold]
    return Candidate("generic", d.id, pos.turn, _rng(seed, d.id, pos.turn, "generic").choice(fillers))


def memory(d: Any, pos: Position, pool: dict[str, list[str]], seed: int) -> Candidate | str:
    found = det.find_details(d, pos.turn, pool)
    if not found:
        return "no detail the user gave (place, time, day, number, slot value...) to contradict"
    context = "\n".join(t.text for t in d.turns[: pos.turn + 2])  # the dialogue so far and the gold reply
    rng = _rng(seed, d.id, pos.turn, "memory")
    in_gold = [x for x in found if det.mentions(pos.gold, x.value)]
    for variant, options in (("swap", in_gold), ("recall", found)):
        for detail in rng.sample(options, len(options)):
            new = det.pick_replacement(detail, pool, context, rng)
            if new is None:
                continue
            if variant == "swap":
                text = det.swap(pos.gold, detail.value, new)
            else:
                said = det.restate(d.turns[detail.turn].text, detail.value, new)
                if said is None:
                    continue
                text = f"{pos.gold} {RECALL_V1.format(said=said)}"
            info = {"variant": variant, "detail_kind": detail.kind, "user_said": detail.value, "user_turn": detail.turn,
                    "replaced_by": new}
            return Candidate("memory", d.id, pos.turn, text, info)
    return "no value of the same kind left that the dialogue has not mentioned"


def build(dialogues: list[Any], positions_per_dialogue: int = 3, seed: int = 0) -> Built:
    """Positions sampled per dialogue and, at each, the gold reply and every corruption that can be built."""
    pool = det.slot_values(dialogues)
    out = Built([], [], [])
    for d in dialogues:
        for pos in sample_positions(d, positions_per_dialogue, seed):
            out.positions.append(pos)
            got = {"gold": Candidate("gold", d.id, pos.turn, pos.gold), "off_topic": off_topic(d, pos, dialogues, seed),
                   "repeat": repeat(d, pos), "generic": generic(d, pos, seed), "memory": memory(d, pos, pool, seed)}
            for kind in KINDS:
                c = got[kind]
                if isinstance(c, Candidate):
                    out.candidates.append(c)
                else:
                    out.skipped.append({"kind": kind, "dialogue_id": d.id, "turn": pos.turn, "reason": c})
    return out
