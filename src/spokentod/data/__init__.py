"""Data: one dialogue schema, corpus loaders, JSONL manifests, spoken-corpus building."""

from spokentod.data.schema import Audio, Dialogue, Intent, Phase, Speaker, State, Turn

__all__ = ["Audio", "Dialogue", "Intent", "Phase", "Speaker", "State", "Turn"]
