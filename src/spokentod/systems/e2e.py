"""End-to-end system: an audio LM hears the user's audio (and the history as text, audio or both)
and answers with text and, when it can, audio."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from spokentod.audio import write_wav
from spokentod.data.schema import Turn
from spokentod.systems._common import SystemSettings, backend_identity, failed
from spokentod.systems.base import Context, SystemReply
from spokentod.systems.messages import audio_messages, text_messages


class E2ESystem:
    speaks = True  # per instance: what the audio LM declares (below)

    def __init__(self, audiolm: Any, settings: SystemSettings | None = None, history: str = "text",
                 audio_root: Path | None = None, name: str = "e2e", user_input: str = "audio"):
        if history not in ("text", "audio", "both"):
            raise ValueError(f"e2e history must be text, audio or both, not {history!r}")
        if user_input not in ("audio", "text"):
            raise ValueError(f"e2e user_input must be audio or text, not {user_input!r}")
        # user_input="text": the same audio LM reads the gold user text (the reference implementation's "text mode")
        self.user_input = user_input
        self.audiolm, self.settings, self.history, self.name = audiolm, settings or SystemSettings(), history, name
        self.audio_root = audio_root
        # An audio LM that never answers with audio (text-out by design or by config) declares `speaks = False`,
        # and its replies are scored on their text; one that should speak but returns no audio is a spoken
        # reply with its audio missing.
        self.speaks = bool(getattr(audiolm, "speaks", True))

    def identity(self) -> dict[str, Any]:
        return {"type": "e2e", "audiolm": backend_identity(self.audiolm), "history": self.history,
                "user_input": self.user_input,
                **self.settings.identity()}

    def respond(self, context: Context, user_turn: Turn, audio_out: Path | None = None) -> SystemReply:
        t0 = time.perf_counter()
        reply = SystemReply()
        try:
            prompt, turns, reply.truncated = self.settings.prepare(context)
            if self.user_input == "text":
                msgs = text_messages(prompt, turns, user_turn.text)
            else:
                if user_turn.audio is None or self.audio_root is None:
                    raise ValueError(f"user turn {user_turn.index} has no audio")
                msgs = audio_messages(prompt, turns, self.audio_root / user_turn.audio.path, self.audio_root,
                                      self.history)
            out = self.audiolm.respond(msgs, self.settings.params)
        except Exception as e:  # noqa: BLE001
            return failed(reply, "audiolm", e, t0)
        reply.text = out.text.strip()
        reply.timings["audiolm"] = out.timings.wall
        if out.timings.first is not None:
            reply.timings["first_audio"] = out.timings.first
        if out.audio is not None and audio_out is not None and len(out.audio.samples):
            write_wav(audio_out, out.audio.samples, out.audio.rate)
            reply.audio_path, reply.audio_seconds = str(audio_out), out.audio.duration
        reply.timings["total"] = time.perf_counter() - t0
        return reply
