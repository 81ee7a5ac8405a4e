"""Systems under test: cascade (ASR → LLM → TTS), end-to-end audio LM, text-only.

`build_system(name, cfg)` builds one from a config dict such as::

    {"type": "cascade", "asr": {"name": "whisper-ct2"}, "llm": {"name": "smollm2"},
     "tts": {"name": "kokoro"}, "voice": "jm_kumo", "streaming": true,
     "prompt": "sales_agent_v1", "params": {"max_tokens": 48}}

`wrap` (optional) is applied to every backend after creation, e.g. the shared cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from spokentod.backends.base import create
from spokentod.systems._common import SystemSettings
from spokentod.systems.base import Context, System, SystemReply
from spokentod.systems.cascade import CascadeSystem
from spokentod.systems.e2e import E2ESystem
from spokentod.systems.text import TextSystem

__all__ = ["CascadeSystem", "Context", "E2ESystem", "System", "SystemReply", "TextSystem", "build_system"]


def build_system(name: str, cfg: dict[str, Any], audio_root: Path | None = None,
                 wrap: Callable[[str, Any], Any] | None = None,
                 make: Callable[[str, dict[str, Any]], Any] | None = None) -> System:
    """`make(kind, backend_cfg)` replaces create+wrap entirely (the runner uses it to share one model
    instance per config across systems without loading it twice)."""
    wrap = wrap or (lambda kind, backend: backend)
    settings = SystemSettings.from_config(cfg)
    kind = cfg.get("type")

    def backend(k: str) -> Any:
        if k not in cfg:
            raise ValueError(f"system {name!r} ({kind}) needs a '{k}' backend config")
        return make(k, cfg[k]) if make else wrap(k, create(k, cfg[k]))

    if kind == "text":
        return TextSystem(backend("llm"), settings, name=name)
    if kind == "cascade":
        return CascadeSystem(backend("asr"), backend("llm"), backend("tts"), settings, voice=cfg.get("voice"),
                             streaming=cfg.get("streaming", True), audio_root=audio_root, name=name,
                             chunking=cfg.get("chunking"))
    if kind == "e2e":
        return E2ESystem(backend("audiolm"), settings, history=cfg.get("e2e_history", "text"),
                         audio_root=audio_root, name=name, user_input=cfg.get("user_input", "audio"))
    if isinstance(kind, str) and ":" in kind:  # a plug-in system class "module:Class"
        import importlib

        mod, _, cls = kind.partition(":")
        return getattr(importlib.import_module(mod), cls)(name=name, cfg=cfg, audio_root=audio_root)
    raise ValueError(f"system {name!r}: unknown type {kind!r} (cascade, e2e, text or 'module:Class')")
