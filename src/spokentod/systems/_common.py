"""Pieces every system shares: prompt rendering, params, truncation, error capture."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from spokentod.backends.base import GenParams
from spokentod.errors import error_cause
from spokentod.systems.base import Context, SystemReply
from spokentod.systems.config import SystemConfig
from spokentod.systems.messages import truncate_turns
from spokentod.systems.prompts import Prompt, load_prompt


def backend_identity(backend: Any) -> dict[str, Any]:
    ident = getattr(backend, "identity", None)
    return ident() if callable(ident) else {"class": type(backend).__qualname__}


@dataclass
class SystemSettings:
    prompt: Prompt = field(default_factory=load_prompt)
    params: GenParams = field(default_factory=GenParams)
    use_intent: bool = True  # give the dialogue's intent description to the agent (configurable, as in the reference implementation)
    max_context_tokens: int | None = None

    @classmethod
    def from_config(cls, cfg: SystemConfig) -> SystemSettings:
        return cls(prompt=load_prompt(cfg.prompt), params=GenParams(**cfg.params), use_intent=cfg.use_intent,
                   max_context_tokens=cfg.max_context_tokens)

    def identity(self) -> dict[str, Any]:
        return {"prompt": self.prompt.name, "prompt_sha256": self.prompt.sha256, "params": self.params.as_dict(),
                "use_intent": self.use_intent, "max_context_tokens": self.max_context_tokens}

    def prepare(self, context: Context) -> tuple[str, list, bool]:
        turns, truncated = truncate_turns(context.turns, self.max_context_tokens)
        return self.prompt.render(context.intent, self.use_intent), turns, truncated or context.truncated


def failed(reply: SystemReply, stage: str, exc: BaseException, t0: float) -> SystemReply:
    """A failure becomes a recorded reply, never an exception that kills a worker."""
    reason = str(exc) or type(exc).__name__
    reply.error = f"{stage}: {type(exc).__name__}: {reason}"
    reply.error_reason = f"{stage}: {error_cause(exc)}"
    reply.extra["traceback"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    reply.timings["total"] = time.perf_counter() - t0
    return reply
