"""Text-only system: gold user text in, text out (the reference paper's text-only upper bound)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from spokentod.data.schema import Turn
from spokentod.systems._common import SystemSettings, backend_identity, failed
from spokentod.systems.base import Context, SystemReply
from spokentod.systems.messages import text_messages


class TextSystem:
    speaks = False

    def __init__(self, llm: Any, settings: SystemSettings | None = None, name: str = "text"):
        self.llm, self.settings, self.name = llm, settings or SystemSettings(), name

    def identity(self) -> dict[str, Any]:
        return {"type": "text", "llm": backend_identity(self.llm), **self.settings.identity()}

    def respond(self, context: Context, user_turn: Turn, audio_out: Path | None = None) -> SystemReply:
        t0 = time.perf_counter()
        reply = SystemReply()
        try:
            prompt, turns, reply.truncated = self.settings.prepare(context)
            out = self.llm.chat(text_messages(prompt, turns, user_turn.text), self.settings.params)
        except Exception as e:  # noqa: BLE001 - recorded, the run goes on
            return failed(reply, "llm", e, t0)
        reply.text = out.text.strip()
        reply.timings.update(llm=out.timings.wall, total=time.perf_counter() - t0)
        if out.ttft is not None:
            reply.timings["ttft"] = out.ttft
        reply.extra["tokens"] = out.tokens
        return reply
