"""The audio the systems hear: turns without audio are rendered once into <run>/audio_in by TTS."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from spokentod.bench.config import BenchConfig
from spokentod.data.manifest import read_manifest
from spokentod.data.schema import Dialogue, Speaker
from spokentod.data.synth import SynthError, synthesize_manifest
from spokentod.errors import BenchError
from spokentod.rundir.layout import AUDIO_IN

console = Console(stderr=True, soft_wrap=True)


def ensure_audio(cfg: BenchConfig, dialogues: list[Dialogue], out: Path, base: Path | None,
                 progress: bool = True) -> Path | None:
    """Make sure the turns the systems hear have audio; render them once into <out>/audio_in if not.
    Returns the folder turn audio paths are relative to (what systems get as audio_root)."""
    user = any(s.wants_audio for s in cfg.systems.values())
    agent = any(s.wants_agent_audio for s in cfg.systems.values())
    if not (user or agent):
        return base
    speakers = cfg.audio.speakers if cfg.audio.speakers != "auto" else ("all" if agent else "user")
    wanted = (Speaker.user, Speaker.agent) if speakers == "all" else (Speaker.user,)
    if base is not None and all(t.audio for d in dialogues for t in d.turns if t.speaker in wanted):
        return base
    tts = dict(cfg.audio.tts)
    name = tts.pop("name")
    audio_dir = out / AUDIO_IN
    try:
        manifest = synthesize_manifest(dialogues, audio_dir, tts=name, voices=cfg.audio.voices, speakers=speakers,
                                       rate=cfg.audio.rate, tts_config=tts, progress=progress)
    except SynthError as e:
        if e.path is None:
            raise BenchError(str(e)) from None
        console.print(f"[yellow]warning:[/yellow] {e} (their turns will be recorded as errors)")
        manifest = e.path
    rendered = {d.id: d for d in read_manifest(manifest)}
    for d in dialogues:
        for t, r in zip(d.turns, rendered[d.id].turns):
            t.audio = r.audio
    return audio_dir.resolve()
