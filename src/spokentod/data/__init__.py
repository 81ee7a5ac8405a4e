"""Data: one dialogue schema, corpus loaders, JSONL manifests, spoken-corpus building."""

from spokentod.data.schema import Audio, Dialogue, Intent, Phase, Speaker, State, Turn
from spokentod.data.source import DialogueSource, load_dialogues

__all__ = ["Audio", "Dialogue", "DialogueSource", "Intent", "Phase", "Speaker", "State", "Turn", "load_dialogues"]
