"""Reading the text and audio parts of OpenAI-shaped chat messages (see `Message` in backends/base.py)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from spokentod.audio import as_waveform, is_silent
from spokentod.backends.base import Message
from spokentod.errors import AudioError


def parts(message: Message) -> list[dict[str, Any]]:
    """A message's content as a list of parts; a plain string is one text part."""
    content = message.get("content")
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


def part_audio(part: dict[str, Any], rate: int, where: str = "") -> np.ndarray | None:
    """float32 mono samples at `rate` for an audio part, None for any other part. Empty or silent audio is
    an error naming the message: a model given silence answers something, and the score would hide why."""
    kind = part.get("type")
    if kind == "input_audio":
        spec = part.get("input_audio") or {}
        try:
            data = base64.b64decode(spec.get("data", ""), validate=True)
        except (binascii.Error, ValueError):
            raise AudioError(f"{where}: input_audio data is not valid base64") from None
        wav = as_waveform(data, target_rate=rate)
    elif kind == "audio":  # in-process: samples + rate, or a path / bytes / AudioOut under "audio"
        if "samples" in part:
            wav = as_waveform(part["samples"], rate=part.get("rate"), target_rate=rate)
        else:
            wav = as_waveform(part["audio"], target_rate=rate)
    else:
        return None
    if len(wav.samples) == 0:
        raise AudioError(f"{where}: audio part is empty")
    if is_silent(wav.samples):
        raise AudioError(f"{where}: audio part is silent")
    return wav.samples


def part_text(part: dict[str, Any]) -> str | None:
    return part.get("text", "") if part.get("type") == "text" else None
