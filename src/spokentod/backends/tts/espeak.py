"""espeak-ng as a TTS voice: the fast, robotic fallback. No apt: the library and its data come from
`espeakng-loader`, called through ctypes (espeak_Synth in synchronous mode with a callback that
collects the 16-bit samples), 22050 Hz mono.

We load a private copy of the shared library (like phonemizer does) so that our voice and rate settings
never leak into the phonemizer instance the Kokoro backend uses, serialize calls with a lock (espeak-ng
keeps global state) and reload it for every utterance so that the output is deterministic.

Voices: any espeak-ng English voice name, optionally with a variant: en-us, en-gb, en-us+f3, en-gb+m3…
Measured here (2 shared CPU cores, benchmarks/synth_speed.py): 0.004 CPU seconds per audio second, over
200× faster than real time (~2 ms of each call is the library reload). It is robotic: Whisper tiny.en
WER on 10 task sentences is 9-19 % per voice at espeak's default 175 words per minute and 8.5-15.5 % at
150 (mean 14.6 % vs 12.4 %), hence wpm=150. Kokoro gets 3-4 % on the same sentences.
"""

from __future__ import annotations

import _ctypes
import ctypes
import shutil
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from spokentod.backends.base import AudioOut, Backend, Timings, register
from spokentod.backends.tts._common import TTSError, check_text

VOICES = ("en-us", "en-us+f3", "en-us+m3", "en-gb", "en-gb+f4", "en-gb+m2")
_ALIASES = {"en-gb": "en"}  # espeak-ng names voices by file; British English is the file "en"

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER ids
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Engine:
    """One private libespeak-ng instance for the process."""

    _instance: _Engine | None = None
    _guard = threading.Lock()

    def __init__(self):
        import espeakng_loader

        self._data = espeakng_loader.get_data_path().encode()
        self._tmp = tempfile.TemporaryDirectory(prefix="spokentod-espeak-")
        lib = Path(espeakng_loader.get_library_path())
        self._path = str(Path(self._tmp.name) / lib.name)
        shutil.copy(lib, self._path)
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept on self: ctypes must not free it
        self.lock = threading.Lock()
        self.lib = None
        self._open()

    def _open(self) -> None:
        """(Re)load the library. espeak-ng carries hidden state from one utterance to the next (the same
        text comes out a few ms longer or shorter; espeak_Terminate does not reset it), so every
        utterance gets a fresh instance: ~2 ms, and the output is then bit-identical run to run."""
        if self.lib is not None:
            self.lib.espeak_Terminate()
            _ctypes.dlclose(self.lib._handle)
        self.lib = lib = ctypes.CDLL(self._path)
        self.rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data, 0)
        if self.rate <= 0:
            raise TTSError(f"espeak-ng failed to initialize (code {self.rate})")
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _Engine:
        with cls._guard:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue

    def set_voice(self, voice: str) -> None:
        """Call with the lock held."""
        base, plus, variant = voice.partition("+")
        name = _ALIASES.get(base.lower(), base) + plus + variant
        if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise TTSError(f"unknown espeak-ng voice {voice!r} (try one of {', '.join(VOICES)})")

    def speak(self, text: str, voice: str, wpm: int, pitch: int) -> np.ndarray:
        data = text.encode("utf-8") + b"\0"
        with self.lock:
            self._open()
            self.set_voice(voice)
            self.lib.espeak_SetParameter(_RATE, int(wpm), 0)
            self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            self._chunks = []
            err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if err != 0:
            raise TTSError(f"espeak-ng synthesis failed (code {err}) for {text[:60]!r}")
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0


@register("tts", "espeak")
class EspeakTTS(Backend):
    """Options: voice (default en-us), wpm (speaking rate, words per minute; espeak's own default is 175),
    pitch (0-100, 50 default)."""

    def __init__(self, voice: str = "en-us", wpm: int = 150, pitch: int = 50):
        self.voices = list(VOICES)  # the default set for corpus building; any espeak-ng voice works
        if not 80 <= int(wpm) <= 450:
            raise TTSError(f"wpm must be within 80..450, got {wpm}")
        self.voice, self.wpm, self.pitch = voice, int(wpm), int(pitch)

    def check_voice(self, voice: str | None) -> str:
        engine = _Engine.get()
        with engine.lock:
            engine.set_voice(voice or self.voice)
        return voice or self.voice

    def synthesize(self, text: str, voice: str | None = None) -> AudioOut:
        t0 = time.perf_counter()
        engine = _Engine.get()
        samples = engine.speak(check_text(text), voice or self.voice, self.wpm, self.pitch)
        if len(samples) == 0:
            raise TTSError(f"espeak-ng produced no audio for {text[:60]!r}")
        wall = time.perf_counter() - t0
        return AudioOut(samples, engine.rate, Timings(wall=wall, rtf=wall / (len(samples) / engine.rate)))

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "voice": self.voice,
            "wpm": self.wpm,
            "pitch": self.pitch,
            "espeakng_loader": version("espeakng-loader"),
        }
