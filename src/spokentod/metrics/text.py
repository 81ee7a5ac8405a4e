"""Text normalization for WER, shared by the demo, bench and dst.

`normalize_for_wer` is Whisper's English normalizer (transformers' EnglishTextNormalizer, the usual
choice in ASR papers): lower-case, punctuation removed, contractions expanded ("i'd" → "i would"),
spelled-out numbers turned into digits ("twenty five" → "25"), British spellings are *not* mapped.
One pre-step: the colon inside times is dropped ("7:30" → "730") so that "seven thirty" and "7:30"
agree. Without transformers it falls back to lower-casing and stripping punctuation.
"""

from __future__ import annotations

import re
from functools import lru_cache

_TIME_COLON = re.compile(r"(?<=\d):(?=\d\d)")
_PUNCT = re.compile(r"[^\w\s']")


@lru_cache(maxsize=1)
def _whisper_normalizer():
    try:
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
    except ImportError:
        return None
    return EnglishTextNormalizer({})


def basic_normalize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower().replace("&", " and ")).split())


def normalize_for_wer(text: str) -> str:
    text = _TIME_COLON.sub("", text).replace("&", " and ")
    norm = _whisper_normalizer()
    return " ".join(norm(text).split()) if norm else basic_normalize(text)
