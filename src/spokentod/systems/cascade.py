"""Cascade system: ASR → LLM → TTS, streaming like a production voice agent.

Streaming mode: LLM tokens are cut into sentences as they arrive and each sentence is synthesized on a
TTS worker thread while the LLM generates the next, so the first audio is ready long before the whole
reply. Sequential mode (generate everything, then synthesize) stays available for comparison.
Timings (seconds from the start of the turn): asr, ttft, llm, tts (sum of synthesis calls),
first_audio (first sentence synthesized), total.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from spokentod.audio import resample, write_wav
from spokentod.data.schema import Turn
from spokentod.systems._common import SystemSettings, backend_identity, failed
from spokentod.systems.base import Context, SystemReply
from spokentod.systems.messages import text_messages
from spokentod.systems.sentences import sentence_chunks

PAUSE_S = 0.15  # silence between synthesized sentences


class TTSFailure(RuntimeError):
    """Marks a failure inside synthesis so the recorded error names the right stage."""


class CascadeSystem:
    def __init__(self, asr: Any, llm: Any, tts: Any, settings: SystemSettings | None = None,
                 voice: str | None = None, streaming: bool = True, audio_root: Path | None = None,
                 name: str = "cascade"):
        self.asr, self.llm, self.tts = asr, llm, tts
        self.settings, self.voice, self.streaming = settings or SystemSettings(), voice, streaming
        self.audio_root, self.name = audio_root, name
        self._tts_lock = threading.Lock()  # one synthesis at a time per model instance

    def identity(self) -> dict[str, Any]:
        return {"type": "cascade", "asr": backend_identity(self.asr), "llm": backend_identity(self.llm),
                "tts": backend_identity(self.tts), "voice": self.voice, "streaming": self.streaming,
                **self.settings.identity()}

    def _speak(self, text: str):
        try:
            with self._tts_lock:
                return self.tts.synthesize(text, self.voice)
        except Exception as e:  # noqa: BLE001
            raise TTSFailure(f"{type(e).__name__}: {e}") from e

    def respond(self, context: Context, user_turn: Turn, audio_out: Path | None = None) -> SystemReply:
        t0 = time.perf_counter()
        reply = SystemReply()
        stage = "asr"
        try:
            if user_turn.audio is None or self.audio_root is None:
                raise ValueError(f"user turn {user_turn.index} has no audio")
            heard = self.asr.transcribe(self.audio_root / user_turn.audio.path)
            reply.user_transcript = heard.text.strip()
            reply.timings["asr"] = time.perf_counter() - t0
            prompt, turns, reply.truncated = self.settings.prepare(context)
            msgs = text_messages(prompt, turns, reply.user_transcript)
            stage = "llm"
            chunks = self._streaming(msgs, reply, t0) if self.streaming else self._sequential(msgs, reply, t0)
        except TTSFailure as e:
            return failed(reply, "tts", e, t0)
        except Exception as e:  # noqa: BLE001 - recorded with its stage, the run goes on
            return failed(reply, stage, e, t0)
        if chunks and audio_out is not None:
            rate = chunks[0].rate
            gap = np.zeros(int(PAUSE_S * rate), np.float32)
            parts = []
            for c in chunks:
                parts += [resample(c.samples, c.rate, rate), gap]
            audio = np.concatenate(parts[:-1])
            write_wav(audio_out, audio, rate)
            reply.audio_path, reply.audio_seconds = str(audio_out), len(audio) / rate
        reply.timings["total"] = time.perf_counter() - t0
        return reply

    def _sequential(self, msgs, reply: SystemReply, t0: float) -> list:
        t = time.perf_counter()
        out = self.llm.chat(msgs, self.settings.params)
        reply.text = out.text.strip()
        reply.timings["llm"] = time.perf_counter() - t
        reply.timings["ttft"] = (t - t0) + (out.ttft if out.ttft is not None else reply.timings["llm"])
        if not reply.text:
            return []
        t = time.perf_counter()
        audio = self._speak(reply.text)
        reply.timings["tts"] = time.perf_counter() - t
        reply.timings["first_audio"] = time.perf_counter() - t0
        return [audio]

    def _streaming(self, msgs, reply: SystemReply, t0: float) -> list:
        text: list[str] = []
        first: list[float] = []
        tts_time: list[float] = []

        def pieces():
            t = time.perf_counter()
            for p in self.llm.stream(msgs, self.settings.params):
                if not text:
                    reply.timings["ttft"] = time.perf_counter() - t0
                text.append(p)
                yield p
            reply.timings["llm"] = time.perf_counter() - t

        def synth(sentence: str):
            t = time.perf_counter()
            out = self._speak(sentence)
            tts_time.append(time.perf_counter() - t)
            if not first:
                first.append(time.perf_counter() - t0)
            return out

        futures: list[Future] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts") as pool:
            for sentence in sentence_chunks(pieces()):
                futures.append(pool.submit(synth, sentence))
            chunks = [f.result() for f in futures]  # re-raises a TTS failure here
        reply.text = "".join(text).strip()
        reply.timings["tts"] = sum(tts_time)
        if first:
            reply.timings["first_audio"] = first[0]
        return chunks
