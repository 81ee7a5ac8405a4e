"""Test helpers: the real server in a background thread, and tiny backends.

The tiny backends are real classes implementing the protocols, used ONLY to test the server's and the
cache's plumbing (auth, limits, faults, retries, keys) fast; round trips that must show the embedded
models working use the registry's real backends.
"""

from __future__ import annotations

import numpy as np

from spokentod.audio import as_waveform
from spokentod.backends.base import AudioOut, AudioReply, Backend, Completion, GenParams, Timings, Transcript
from spokentod.serve.background import BackgroundServer

ServerThread = BackgroundServer  # the real server, in a thread on a free loopback port


# ---------------------------------------------------------------- tiny protocol implementations


def _last_text(messages) -> str:
    content = messages[-1].get("content") or ""
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content


class EchoLLM(Backend):
    """Answers "echo: <last user text>" cut to max_tokens words; counts its calls."""

    kind, name = "llm", "echo"

    def __init__(self, fail_first: int = 0):
        self.calls, self.fail_first = 0, fail_first

    def _words(self, messages, params):
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError(f"echo failure {self.calls}")
        p = params or GenParams()
        return (["echo:"] + _last_text(messages).split())[: p.max_tokens]

    def chat(self, messages, params=None) -> Completion:
        words = self._words(messages, params)
        return Completion(" ".join(words), ttft=0.001, tokens=len(words), timings=Timings(wall=0.002, first=0.001),
                          finish_reason="stop")

    def stream(self, messages, params=None):
        for i, w in enumerate(self._words(messages, params)):
            yield w if i == 0 else " " + w


class ToneTTS(Backend):
    """A 440 Hz tone, 0.1 s per word, at 16 kHz."""

    kind, name = "tts", "tone"

    def __init__(self):
        self.calls = 0

    def synthesize(self, text, voice=None) -> AudioOut:
        self.calls += 1
        n = int(0.1 * 16000 * max(1, len(text.split())))
        return AudioOut((0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32), 16000,
                        Timings(wall=0.001))


class LengthASR(Backend):
    """Transcribes any audio as "<n> samples"."""

    kind, name = "asr", "length"

    def __init__(self):
        self.calls = 0

    def transcribe(self, audio, language=None) -> Transcript:
        self.calls += 1
        return Transcript(f"{len(as_waveform(audio).samples)} samples", Timings(wall=0.001))


class EchoAudioLM(Backend):
    """Says how much audio it heard, and answers with a tone."""

    kind, name = "audiolm", "echo-omni"

    def respond(self, messages, params=None) -> AudioReply:
        heard = sum(len(p["samples"]) for m in messages if isinstance(m.get("content"), list)
                    for p in m["content"] if p.get("type") == "audio")
        return AudioReply(f"heard {heard} samples", ToneTTS().synthesize("a b c"), Timings(wall=0.001))
