"""Systems under test: cascade (ASR → LLM → TTS), end-to-end audio LM, text-only.

`build_system(name, cfg)` builds one from a `SystemConfig` (systems/config.py; a dict is validated into
one), e.g.::

    SystemConfig(type="cascade", asr="whisper-ct2", llm="smollm2", tts="kokoro", voice="jm_kumo",
                 prompt="sales_agent_v1", params={"max_tokens": 48})

`wrap` (optional) is applied to every backend after creation, e.g. the shared cache.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spokentod.backends.base import create
from spokentod.errors import SpokenTODError
from spokentod.systems._common import SystemSettings
from spokentod.systems.base import Context, System, SystemReply
from spokentod.systems.cascade import CascadeSystem
from spokentod.systems.config import SystemConfig
from spokentod.systems.e2e import E2ESystem
from spokentod.systems.text import TextSystem

__all__ = ["CascadeSystem", "Context", "E2ESystem", "System", "SystemConfig", "SystemDeclarationError",
           "SystemReply", "TextSystem", "build_system", "check_plugin", "speaks"]


class SystemDeclarationError(SpokenTODError, TypeError):
    """A plug-in system class does not declare what it outputs (`speaks`)."""


def build_system(name: str, cfg: SystemConfig | dict[str, Any], audio_root: Path | None = None,
                 wrap: Callable[[str, Any], Any] | None = None,
                 make: Callable[[str, dict[str, Any]], Any] | None = None) -> System:
    """`make(kind, backend_cfg)` replaces create+wrap entirely (the runner uses it to share one model
    instance per config across systems without loading it twice)."""
    cfg = cfg if isinstance(cfg, SystemConfig) else SystemConfig.model_validate(cfg)
    wrap = wrap or (lambda kind, backend: backend)
    settings = SystemSettings.from_config(cfg)

    def backend(k: str) -> Any:
        spec = getattr(cfg, k)
        if spec is None:
            raise ValueError(f"system {name!r} ({cfg.type}) needs a '{k}' backend config")
        return make(k, spec) if make else wrap(k, create(k, spec))

    if cfg.type == "text":
        return TextSystem(backend("llm"), settings, name=name)
    if cfg.type == "cascade":
        return CascadeSystem(backend("asr"), backend("llm"), backend("tts"), settings, voice=cfg.voice,
                             streaming=cfg.streaming, audio_root=audio_root, name=name, chunking=cfg.chunking)
    if cfg.type == "e2e":
        return E2ESystem(backend("audiolm"), settings, history=cfg.e2e_history, audio_root=audio_root, name=name,
                         user_input=cfg.user_input)
    # a plug-in system class "module:Class" (SystemConfig accepts no other type); it gets the config as a dict
    mod, _, cls = cfg.type.partition(":")
    system = getattr(importlib.import_module(mod), cls)(name=name, cfg=cfg.build_dict(), audio_root=audio_root)
    return check_plugin(system, name, cfg.type)


def check_plugin(system: Any, name: str, type_: str) -> Any:
    """A plug-in must say whether it speaks: scoring a text-only reply as speech with its audio missing (or
    the reverse) would leave every text or audio metric missing, so a guess is never made."""
    speaks = getattr(system, "speaks", None)
    if not isinstance(speaks, bool):
        got = "does not declare it" if speaks is None else f"has speaks = {speaks!r}, not a bool"
        raise SystemDeclarationError(
            f"plug-in system {name!r} ({type_}) must declare whether it speaks, and {got}: set the class "
            "attribute `speaks = True` if respond() writes reply audio to audio_out, or `speaks = False` if it "
            "answers in text only (scored on its text like the built-in text system)")
    return system


def speaks(system: Any) -> bool:
    """Whether a built system writes reply audio (plug-ins are checked by build_system)."""
    return bool(getattr(system, "speaks", True))
