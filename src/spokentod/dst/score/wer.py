"""WER and entity WER of the tracker's transcripts against the reference user turns."""

from __future__ import annotations

import re

import jiwer

from spokentod.dst.data import normalize as N
from spokentod.dst.score.states import Item
from spokentod.metrics.text import normalize_for_wer

_CLITIC = re.compile(r" (?=(?:'s|'re|'ve|'ll|'d|'m|n't)\b)")


def _wer_norm(text: str) -> list[str]:
    return normalize_for_wer(_CLITIC.sub("", text)).split()  # "john 's" (tokenized corpora) → "john's"


def _entity_mask(words: list[str], items: tuple[Item, ...], cache: dict) -> list[bool]:
    mask = [False] * len(words)
    for it in items:
        if N.slot_kind(N.canonical_slot(N.canonical_domain(it[0]), it[1])) == "bool":
            continue
        for alt in N.alternatives(it[2]):
            if alt not in cache:
                cache[alt] = _wer_norm(alt) if N.exact_value(alt) not in (None, N.DONTCARE) else []
            span = cache[alt]
            for s in range(len(words) - len(span) + 1) if span else ():
                if words[s:s + len(span)] == span:
                    mask[s:s + len(span)] = [True] * len(span)
    return mask


def wer_scores(pairs: list[tuple[str, str, tuple[Item, ...]]]) -> dict:
    """Corpus WER and entity WER over (reference text, hypothesis text, reference state items)."""
    refs, hyps, masks, cache = [], [], [], {}
    for ref, hyp, items in pairs:
        rw = _wer_norm(ref)
        if rw:
            refs.append(" ".join(rw))
            hyps.append(" ".join(_wer_norm(hyp)))
            masks.append(_entity_mask(rw, items, cache))
    if not refs:
        return {}
    o = jiwer.process_words(refs, hyps)
    ent_words = sum(sum(m) for m in masks)
    ent_err = 0
    for mask, chunks in zip(masks, o.alignments):
        for c in chunks:
            if c.type in ("substitute", "delete"):
                ent_err += sum(mask[c.ref_start_idx:c.ref_end_idx])
            elif c.type == "insert" and 0 < c.ref_start_idx < len(mask) and mask[c.ref_start_idx - 1] \
                    and mask[c.ref_start_idx]:
                ent_err += c.hyp_end_idx - c.hyp_start_idx
    out = {"wer": float(o.wer), "wer_turns": len(refs)}
    if ent_words:
        out.update(entity_wer=ent_err / ent_words, entity_words=ent_words)
    return out
