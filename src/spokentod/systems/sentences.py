"""Cut a token stream into speakable chunks as it arrives (for streaming TTS).

The first chunk is kept small, because the listener waits for all of it to be synthesized before hearing
anything: it ends at the first sentence end or clause mark (``, ; :`` or a dash, followed by white space) once it holds
`first_min_words` words, or after `first_chunk_words` words if no such mark comes first. Later chunks
are whole sentences, so the TTS sees complete prosodic units (a sentence shorter than `min_words` words
waits for the next one; a very long one is still cut at a clause mark once it holds `clause_words` words).

A mark only counts once the whitespace after it has arrived, so "10,000", "10:30" or "3.5" are never cut
even when the stream splits them ("10," then "000"), and the chunks do not depend on how the text was
split into pieces. Common abbreviations ("Mr.", "e.g.") do not end a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

_CLOSERS = "\"')\\]\u201d\u2019\u00bb"  # closing quotes/brackets that may follow a mark
# a sentence ends at . ! ? … (then optional closers) followed by whitespace
_END = re.compile(rf"[.!?\u2026]+[{_CLOSERS}]*(?=\s)")
# a clause ends at , ; : or an em dash (then optional closers) followed by whitespace, or at an en dash /
# hyphen with whitespace on both sides ("well—let's" is one word: chunks must re-join to the text)
_CLAUSE = re.compile(rf"(?:[,;:]|\u2014)[{_CLOSERS}]*(?=\s)|(?<=\s)[\u2013-](?=\s)")
# "Mr. Smith" and "e.g. this" are not sentence ends
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "e.g", "i.e", "approx"})
# a word-count cut does not leave the first chunk hanging on one of these; it takes up to two more words
_GLUE = frozenset({
    "a", "an", "the", "of", "to", "in", "on", "at", "for", "with", "from", "by", "about", "into", "and",
    "or", "but", "so", "as", "if", "than", "that", "this", "these", "those", "my", "your", "our", "their",
    "his", "her", "its", "is", "are", "was", "were", "be", "been", "am", "will", "would", "can", "could",
    "should", "may", "might", "not", "no", "very", "i", "i'm", "i'll", "i'd", "i've", "you", "you're",
    "we", "we're", "it", "it's", "they", "they're", "there", "there's",
})
_GLUE_EXTRA = 2


@dataclass(frozen=True)
class ChunkPolicy:
    """How streamed text is cut for the TTS. Defaults: first chunk ≤ 5 words (or up to the first clause
    mark), later chunks whole sentences of ≥ 3 words, long sentences cut at a clause mark after 12 words.
    `first_chunk_words=0` turns the first-chunk rule off (every chunk is a whole sentence, the old
    behaviour with `first_min_words=3`)."""

    first_chunk_words: int = 5  # cut the first chunk after this many words if no mark came first; 0: off
    first_min_words: int = 1  # a sentence end / clause mark ends the first chunk once it has this many words
    min_words: int = 3  # later chunks: shorter sentences are joined to the next one
    clause_words: int = 12  # later chunks: a sentence this long is cut at its next clause mark
    # cascade: when the TTS worker gets free, it speaks every chunk that is waiting in one call (never the
    # first chunk): fewer calls, whole-sentence prosody, and nothing is delayed since the TTS was busy
    merge_ready: bool = True

    def __post_init__(self) -> None:
        for name in ("first_chunk_words", "first_min_words", "min_words", "clause_words"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ChunkPolicy.{name} must be a non-negative integer, got {value!r}")
        if not isinstance(self.merge_ready, bool):
            raise TypeError(f"ChunkPolicy.merge_ready must be true or false, got {self.merge_ready!r}")

    @classmethod
    def from_config(cls, cfg: ChunkPolicy | dict[str, Any] | None) -> ChunkPolicy:
        if cfg is None:
            return cls()
        if isinstance(cfg, ChunkPolicy):
            return cfg
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown chunking option(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**cfg)

    def identity(self) -> dict[str, Any]:
        return asdict(self)


def _words(text: str) -> int:
    return len(text.split())


def _is_abbreviation(buf: str, end: int) -> bool:
    """Does the mark ending at buf[:end] close an abbreviation such as "Mr." (not a sentence end)?"""
    before = buf[:end].rstrip(_CLOSERS).split()
    return bool(before) and before[-1].rstrip(".").lstrip("\"'(\u201c\u2018").lower() in _ABBREVIATIONS


def _sentence_ends(buf: str) -> Iterator[int]:
    for m in _END.finditer(buf):
        if not (m.group().startswith(".") and _is_abbreviation(buf, m.end())):
            yield m.end()


def _clause_ends(buf: str) -> Iterator[int]:
    for m in _CLAUSE.finditer(buf):
        yield m.end()


def _first_qualifying(ends: Iterable[int], buf: str, least: int) -> int | None:
    return next((end for end in sorted(set(ends)) if _words(buf[:end]) >= least), None)


def _earliest(*cuts: int | None) -> int | None:
    return min((c for c in cuts if c is not None), default=None)


def _word_cut(buf: str, n: int) -> int | None:
    """End of the n-th complete word (followed by whitespace that has arrived), moved up to two words on
    when it is a word such as "the" or "to" that should not end a chunk; None while more text is needed."""
    spans = [m.span() for m in re.finditer(r"\S+(?=\s)", buf)]
    k = n
    while True:
        if len(spans) < k:
            return None
        word = buf[spans[k - 1][0]:spans[k - 1][1]].strip(_CLOSERS + ",.").lower()
        if k >= n + _GLUE_EXTRA or word not in _GLUE:
            return spans[k - 1][1]
        k += 1


def _first_cut(buf: str, policy: ChunkPolicy) -> int | None:
    """End of the first chunk in `buf`, or None while more text is needed: the earliest sentence end or
    clause mark with enough words, unless the word-count cut comes before it."""
    least = max(1, policy.first_min_words)
    mark = _first_qualifying([*_sentence_ends(buf), *_clause_ends(buf)], buf, least)
    word = _word_cut(buf, policy.first_chunk_words) if policy.first_chunk_words else None
    return _earliest(mark, word)


def _later_cut(buf: str, policy: ChunkPolicy) -> int | None:
    """End of a later chunk in `buf`: a sentence end, or a clause mark in a very long sentence."""
    sentence = _first_qualifying(_sentence_ends(buf), buf, max(1, policy.min_words))
    clause = _first_qualifying(_clause_ends(buf), buf, policy.clause_words) if policy.clause_words else None
    return _earliest(sentence, clause)


def sentence_chunks(pieces: Iterable[str], policy: ChunkPolicy | None = None) -> Iterator[str]:
    """Yield speakable chunks of streamed text as soon as each is complete (see the module doc). Joined
    with single spaces they give the whole text (white space between chunks collapsed)."""
    policy = policy or ChunkPolicy()
    buf, first = "", True
    for piece in pieces:
        buf += piece
        while True:
            end = _first_cut(buf, policy) if first else _later_cut(buf, policy)
            if end is None:
                break
            chunk, buf = buf[:end].strip(), buf[end:].lstrip()
            if chunk:
                yield chunk
                first = False
    if buf.strip():
        yield buf.strip()
