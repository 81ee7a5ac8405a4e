"""Shared pieces of the embedded TTS backends: the error type, text checks, sentence splitting."""

from __future__ import annotations

import re

from spokentod.errors import SpokenTODError

# Sentence ends: . ! ? ; (and … or a newline) followed by white space. Abbreviations such as "Mr. Smith"
# split too; harmless here because the pieces are re-joined (Kokoro) or spoken with a short pause.
_SENTENCE_END = re.compile(r"(?<=[.!?;…])\s+|\n+")


class TTSError(SpokenTODError, ValueError):
    """Text a TTS backend cannot speak (empty, only punctuation, unknown voice)."""


def check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TTSError(f"TTS text must be a string, got {type(text).__name__}")
    text = text.strip()
    if not any(c.isalnum() for c in text):
        raise TTSError(f"nothing to speak in {text!r} (empty or punctuation only)")
    return text


def split_sentences(text: str) -> list[str]:
    """Sentences with inner white space collapsed; a newline also ends a sentence."""
    return [" ".join(s.split()) for s in _SENTENCE_END.split(text) if s and s.strip()]
