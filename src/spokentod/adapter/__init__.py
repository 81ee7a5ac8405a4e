"""The speech adapter: a frozen speech encoder → a trained connector → the frozen embedded LLM.

It is the DST model's phase 1 (ASR pre-training of the connector) and, because the LLM stays frozen and
keeps its chat ability, an end-to-end speech-in LM whose LLM is the cascade's own. Modules:

- ``corpus``: the leak-free ASR pre-training corpus (text pool → TTS with many voices → manifest).
"""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED = Path(__file__).resolve().parent / "embedded"  # the adapter shipped in the package (adapter.json says what)


def adapter_dir(name: str | os.PathLike | None) -> Path:
    """None, "" or "embedded" → the shipped adapter; anything else is an adapter directory."""
    return EMBEDDED if name is None or str(name) in ("", "embedded") else Path(name)
