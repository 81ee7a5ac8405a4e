"""Cascade system: ASR → LLM → TTS, streaming like a production voice agent.

Streaming mode: LLM tokens are cut into chunks as they arrive (`sentences.ChunkPolicy`: a short first
chunk — up to the first clause mark or 5 words — then whole sentences) and a TTS worker thread
synthesizes each chunk while the LLM generates the next, so the first audio is ready long before the whole
reply. When the worker gets free it speaks every chunk already waiting in one call (`merge_ready`).
Sequential mode (generate everything, then synthesize) stays available for comparison.
Timings (seconds): asr, ttft, first_chunk (streaming: first chunk handed to the TTS), first_audio and total
from the start of the turn; llm (generation) and tts (sum of synthesis calls); stall (streaming: how long a
listener who starts playing at first_audio waits for later chunks, 0 when the TTS keeps ahead).
`reply.extra["tts_chunks"]` lists the texts of the synthesis calls (streaming).

Both stages are CPU-bound on a CPU-only host: streaming total ≥ asr + max(llm, tts) (each measured alone),
so it only hides the shorter stage; with Kokoro on 2 cores TTS is the longer one
(benchmarks/cascade_latency.py prints that bound).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from spokentod.audio import resample, write_wav
from spokentod.data.schema import Turn
from spokentod.systems._common import SystemSettings, backend_identity, failed
from spokentod.systems.base import Context, SystemReply
from spokentod.systems.messages import text_messages
from spokentod.systems.sentences import ChunkPolicy, sentence_chunks

PAUSE_S = 0.15  # silence between synthesized sentences


class TTSFailure(RuntimeError):
    """Marks a failure inside synthesis so the recorded error names the right stage."""


class CascadeSystem:
    speaks = True

    def __init__(self, asr: Any, llm: Any, tts: Any, settings: SystemSettings | None = None,
                 voice: str | None = None, streaming: bool = True, audio_root: Path | None = None,
                 name: str = "cascade", chunking: ChunkPolicy | dict[str, Any] | None = None):
        """`chunking`: how streamed text is cut for the TTS (a ChunkPolicy or its fields as a dict;
        default ChunkPolicy(): first chunk ≤ 5 words or up to the first clause mark, then sentences)."""
        self.asr, self.llm, self.tts = asr, llm, tts
        self.settings, self.voice, self.streaming = settings or SystemSettings(), voice, streaming
        self.chunking = ChunkPolicy.from_config(chunking)
        self.audio_root, self.name = audio_root, name
        self._tts_lock = threading.Lock()  # one synthesis at a time per model instance

    def identity(self) -> dict[str, Any]:
        ident = {"type": "cascade", "asr": backend_identity(self.asr), "llm": backend_identity(self.llm),
                 "tts": backend_identity(self.tts), "voice": self.voice, "streaming": self.streaming,
                 **self.settings.identity()}
        if self.streaming:  # how the reply is cut changes the streamed audio, not the sequential one
            ident["chunking"] = self.chunking.identity()
        return ident

    def warmup(self) -> None:
        """Load the TTS model and run it once, so the first turn's first audio does not pay for it."""
        warm = getattr(self.tts, "warmup", None)
        if callable(warm):
            warm(self.voice)
        else:
            self._speak("Hello.")

    def _speak(self, text: str):
        try:
            with self._tts_lock:
                return self.tts.synthesize(text, self.voice)
        except Exception as e:
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
        policy = self.chunking
        text: list[str] = []
        waiting: queue.SimpleQueue = queue.SimpleQueue()  # chunk texts for the TTS worker; None: no more
        spoken: list[tuple[str, Any, float]] = []  # (text, audio, ready time from t0) per synthesis call
        tts_time: list[float] = []
        failure: list[BaseException] = []
        abort = threading.Event()  # set by either side when the other should stop early

        def pieces():
            t = time.perf_counter()
            for p in self.llm.stream(msgs, self.settings.params):
                if not text:
                    reply.timings["ttft"] = time.perf_counter() - t0
                text.append(p)
                yield p
            reply.timings["llm"] = time.perf_counter() - t

        def worker() -> None:
            more = True
            while more:
                chunk = waiting.get()
                if chunk is None or abort.is_set():
                    return
                batch = [chunk]
                if policy.merge_ready and spoken:  # the first chunk is spoken alone: it sets first_audio
                    while True:
                        try:
                            nxt = waiting.get_nowait()
                        except queue.Empty:
                            break
                        if nxt is None:
                            more = False
                            break
                        batch.append(nxt)
                said = " ".join(batch)
                t = time.perf_counter()
                try:
                    audio = self._speak(said)
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                    failure.append(e)
                    abort.set()
                    return
                now = time.perf_counter()
                tts_time.append(now - t)
                spoken.append((said, audio, now - t0))

        tts_thread = threading.Thread(target=worker, name="spokentod-tts", daemon=True)
        tts_thread.start()
        try:
            chunks = sentence_chunks(pieces(), policy)
            try:
                for chunk in chunks:
                    reply.timings.setdefault("first_chunk", time.perf_counter() - t0)
                    waiting.put(chunk)
                    if abort.is_set():  # the TTS failed: stop generating
                        break
            finally:
                chunks.close()  # closes the LLM stream too, which stops its generation thread
        except BaseException:
            abort.set()
            raise
        finally:
            waiting.put(None)
            tts_thread.join()
        if failure:
            raise failure[0]
        reply.text = "".join(text).strip()
        reply.timings["tts"] = sum(tts_time)
        if spoken:
            reply.timings["first_audio"] = spoken[0][2]
            reply.timings["stall"] = playback_stall([(ready, _seconds(a)) for _, a, ready in spoken], PAUSE_S)
            reply.extra["tts_chunks"] = [said for said, _, _ in spoken]
        return [a for _, a, _ in spoken]


def _seconds(audio: Any) -> float:
    return len(audio.samples) / audio.rate if audio.rate else 0.0


def playback_stall(chunks: list[tuple[float, float]], gap: float = 0.0) -> float:
    """Total wait of a listener who starts playing the first chunk as soon as it is ready and plays the
    chunks in order with `gap` seconds between them; `chunks` holds (ready time, audio seconds)."""
    stall, end = 0.0, None
    for ready, seconds in chunks:
        if end is not None:
            end += gap
            stall += max(0.0, ready - end)
            end = max(end, ready) + seconds
        else:
            end = ready + seconds
    return stall
