"""Small text helpers for corpus loaders: undo PTB-style tokenization, sniff a file's head."""

from __future__ import annotations

import re
from pathlib import Path

# Clitics split off by the MultiWOZ/ConvLab tokenizer: "do n't", "John 's", "I 'm", "you 're", ...
_NT = re.compile(r"(\w) (n't)\b", re.IGNORECASE)
_CLITIC = re.compile(r"(\w) ('(?:s|re|ve|m|ll|d))\b", re.IGNORECASE)
# Closing punctuation never takes a space before it in written English.
_CLOSE = re.compile(r" ([.,!?;:%)\]}])")
_OPEN = re.compile(r"([(\[{]) ")


def detokenize(text: str) -> str:
    """Turn tokenized corpus text back into written text, for TTS prompts and ASR references.

    ``"Saint John 's college to Pizza Hut Fen Ditton ."`` → ``"Saint John's college to Pizza Hut Fen Ditton."``.
    Also collapses runs of whitespace (MultiWOZ has double spaces and embedded newlines). Idempotent on
    ordinary text, so it is safe to apply to corpora that were never tokenized.
    """
    s = " ".join(text.split())
    if "'" in s:  # (cheap guard: most utterances have no clitic)
        s = _CLITIC.sub(r"\1\2", _NT.sub(r"\1\2", s))
    return _OPEN.sub(r"\1", _CLOSE.sub(r"\1", s))


def read_head(path: str | Path, n: int = 65536) -> str:
    """The first `n` characters of a text file ('' if unreadable): enough for cheap format detection."""
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as f:
            return f.read(n)
    except OSError:
        return ""
