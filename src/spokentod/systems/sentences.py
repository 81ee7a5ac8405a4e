"""Cut a token stream into speakable chunks as it arrives (for streaming TTS)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# a sentence ends at . ! ? (optionally followed by quotes/brackets) and then whitespace
_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def sentence_chunks(pieces: Iterable[str], first_min_words: int = 3, clause_words: int = 12) -> Iterator[str]:
    """Yield complete sentences from streamed text. A long sentence is also cut at a comma once it
    holds `clause_words` words, so the first audio never waits for a very long first sentence."""
    buf = ""
    for piece in pieces:
        buf += piece
        while True:
            m = next((m for m in _END.finditer(buf) if len(buf[: m.start()].split()) >= first_min_words), None)
            if m:
                yield buf[: m.start()].strip()
                buf = buf[m.end():]
                continue
            comma = buf.rfind(", ")
            if comma > 0 and len(buf[:comma].split()) >= clause_words:
                yield buf[: comma + 1].strip()
                buf = buf[comma + 2:]
                continue
            break
    if buf.strip():
        yield buf.strip()
