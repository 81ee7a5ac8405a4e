"""Versioned system prompts. A prompt is a text file here (or any path); its sha256 goes into results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spokentod.data.schema import Intent
from spokentod.prompt_file import PromptFile

_HERE = Path(__file__).parent
DEFAULT = "sales_agent_v1"


@dataclass(frozen=True)
class Prompt(PromptFile):
    def render(self, intent: Intent | None, use_intent: bool = True) -> str:
        hint = ""
        if use_intent and intent is not None:
            desc = intent.description or intent.type
            hint = f" (in this conversation, the service you can offer is: {desc.rstrip('.')})"
        return " ".join(self.template.replace("{intent_hint}", hint).split())


def load_prompt(name_or_path: str | None = None) -> Prompt:
    """A bundled prompt by name (e.g. 'sales_agent_v1') or a text file path."""
    return Prompt.load(name_or_path or DEFAULT, _HERE)
