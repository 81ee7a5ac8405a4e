"""Gold history → chat messages, and the one truncation rule shared by every system in a comparison.

No truncation by default. With `max_context_tokens`, the oldest whole turns are dropped until the
history fits, counting tokens with one tokenizer-independent rule (words and punctuation marks) so
every system loses exactly the same turns; the reply records `truncated`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from spokentod.data.schema import Speaker, Turn

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def truncate_turns(turns: list[Turn], max_tokens: int | None) -> tuple[list[Turn], bool]:
    if not max_tokens:
        return turns, False
    kept: list[Turn] = []
    total = 0
    for t in reversed(turns):
        total += count_tokens(t.text)
        if total > max_tokens:
            break
        kept.append(t)
    kept.reverse()
    return kept, len(kept) < len(turns)


def role(t: Turn) -> str:
    return "user" if t.speaker == Speaker.user else "assistant"


def text_messages(system_prompt: str, turns: list[Turn], user_text: str) -> list[dict[str, Any]]:
    msgs = [{"role": "system", "content": system_prompt}]
    msgs += [{"role": role(t), "content": t.text} for t in turns]
    msgs.append({"role": "user", "content": user_text})
    return msgs


def audio_part(path: Path) -> dict[str, Any]:
    """In-process audio part: in-process backends read the file (converting it at their edge); HTTP
    backends send it as a base64 WAV `input_audio` part."""
    return {"type": "audio", "audio": str(path)}


def audio_messages(system_prompt: str, turns: list[Turn], user_audio: Path, audio_root: Path | None,
                   history: str = "text") -> list[dict[str, Any]]:
    """E2E messages: history as text, audio or both (agent audio rendered by the same TTS for every
    system); the current user turn always as audio."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
    for t in turns:
        parts: list[dict[str, Any]] = []
        if history in ("audio", "both"):
            if t.audio is None or audio_root is None:
                raise ValueError(f"turn {t.index} has no audio but e2e_history={history!r}")
            parts.append(audio_part(audio_root / t.audio.path))
        if history in ("text", "both"):
            parts.append({"type": "text", "text": t.text})
        msgs.append({"role": role(t), "content": parts})
    msgs.append({"role": "user", "content": [audio_part(user_audio)]})
    return msgs
