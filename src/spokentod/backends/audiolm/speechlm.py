"""Embedded end-to-end speech LM: the trained speech adapter in front of the frozen SmolLM2-135M-Instruct.

Config: ``{"name": "speechlm", "adapter": null (the weights shipped in the package) | a directory with
adapter.safetensors + adapter.json, "threads": null, "tts": null | a TTS backend config, "voice": null,
"prefix_cache": 8}``.

The LLM is the cascade's own (the same converted SmolLM2 weights, untouched), so a cascade (Whisper → this
LLM) and this system differ only in how the user's speech reaches the LLM: a transcript, or the adapter's
speech vectors. The prompt is the LLM's chat template applied to the messages with each audio part
replaced by a marker; the marker's place then receives the adapter's vectors, so the formatting around
them (default system prompt, turn tags) is exactly what the text path gets.

It answers in text; with ``tts`` the reply is also spoken by that TTS (the "talker", like Qwen-Omni's,
recorded in the identity), streamed: the LLM's tokens are cut into chunks as they come (the cascade's
sentence chunker) and each chunk is synthesized at once, so ``timings.first`` is the time to the first
audio chunk. Without ``tts`` it declares ``speaks = False`` and a bench scores its replies on their text.

Under the gold-context protocol successive prompts of a dialogue share everything but the new turns, so
(as for the text LLMs, see llm/_prefix_cache.py) the keys/values of the last ``prefix_cache`` prompts are
kept and a prompt that starts the same way reads only its new part. A prompt position is keyed by its token
id, or for a speech vector by (the audio's sha1, its index), so the same audio in the history matches; an
audio's speech vectors are kept too (the last 32 audios), so ``e2e_history: audio`` does not re-encode
the history every turn. Each audio is encoded on its own, so a prompt's vectors do not depend on what else
is in it or on what is cached.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Any

import numpy as np
import torch

from spokentod.adapter import adapter_dir
from spokentod.backends import _hf
from spokentod.backends.audiolm._parts import part_audio, part_text, parts
from spokentod.backends.base import (
    AudioOut,
    AudioReply,
    Backend,
    GenParams,
    Message,
    Timings,
    create,
    register,
)
from spokentod.backends.llm._generate import until_stop
from spokentod.backends.llm._prefix_cache import PrefixCache

RATE = 16000
MARKER = "\u2063SPEECH\u2063"  # invisible separators: no chat text contains it
SPEECH_MEMO = 32  # audios whose speech vectors are kept (a dialogue's history, heard again next turn)


class Loaded:
    """A speech adapter with its encoder, as both speechlm backends (audiolm and asr) load it."""

    def __init__(self, adapter: str | os.PathLike | None):
        from spokentod.adapter.model import SpeechAdapter  # torch + transformers: only when built
        from spokentod.dst.model.encoders import build_encoder

        self.path = adapter_dir(adapter)
        self.model = SpeechAdapter.load(self.path)
        self.encoder = build_encoder(self.model.cfg.encoder)
        self.sha256 = hashlib.sha256((self.path / "adapter.safetensors").read_bytes()).hexdigest()

    def identity(self) -> dict[str, Any]:
        return {"adapter_sha256": self.sha256, "llm": self.model.cfg.llm, "encoder": self.encoder.identity(),
                "compress": self.model.cfg.compress}


def to_marked(messages: list[Message]) -> tuple[list[dict[str, str]], list[Any]]:
    """OpenAI-shaped messages → (plain-text chat with a MARKER per audio part, the audio arrays in order)."""
    conv: list[dict[str, str]] = []
    audios: list[Any] = []
    for i, m in enumerate(messages):
        texts = []
        for j, p in enumerate(parts(m)):
            text = part_text(p)
            if text is not None:
                texts.append(text)
                continue
            samples = part_audio(p, RATE, where=f"message {i} part {j}")
            if samples is None:
                raise ValueError(f"message {i} part {j}: unsupported part type {p.get('type')!r}")
            texts.append(MARKER)
            audios.append(samples)
        conv.append({"role": m.get("role", "user"), "content": " ".join(texts)})
    return conv, audios


@register("audiolm", "speechlm")
class SpeechLM(Backend):
    def __init__(self, adapter: str | os.PathLike | None = None, threads: int | None = None,
                 tts: dict[str, Any] | str | None = None, voice: str | None = None, prefix_cache: int = 8):
        _hf.set_threads(threads)
        self.adapter = Loaded(adapter)
        self.path, self.model, self.encoder = self.adapter.path, self.adapter.model, self.adapter.encoder
        tok = self.model.tokenizer
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>")
        self.tts, self.voice = (create("tts", tts) if tts else None), voice
        self.speaks = self.tts is not None  # what an e2e system on it declares (systems/e2e.py)
        self._lock = threading.Lock()  # one generation at a time: the seed is process-global
        self.prefixes = PrefixCache(prefix_cache, self.model.llm.config)
        self._speech: OrderedDict[str, torch.Tensor] = OrderedDict()  # audio sha1 -> its speech vectors
        self._speech_lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        talker = {"tts": self.tts.identity(), "voice": self.voice} if self.tts is not None else None
        # reused keys/values round differently from a full prefill, so a greedy near-tie may flip
        return {**super().identity(), **self.adapter.identity(), "talker": talker} | (
            {"prefix_cache": True} if self.prefixes.size else {})

    def speech_vectors(self, samples: Any) -> tuple[str, torch.Tensor]:
        """(the audio's sha1, what the LLM reads for it [N, H]); encoded once per audio while it is recent."""
        arr = np.ascontiguousarray(samples)  # encoded as given: a cast would round the features differently
        key = hashlib.sha1(arr.dtype.str.encode() + arr.tobytes()).hexdigest()
        with self._speech_lock, torch.no_grad():
            if key in self._speech:
                self._speech.move_to_end(key)
            else:
                self._speech[key] = self.model.speech_inputs(self.encoder.encode([arr]))[0]
                while len(self._speech) > SPEECH_MEMO:
                    self._speech.popitem(last=False)
            return key, self._speech[key]

    def prompt(self, messages: list[Message]) -> tuple[torch.Tensor, list[Hashable]]:
        """The chat's [L, H] input embeddings, the adapter's vectors where the audio parts were, and a key
        per position (token id, or (audio sha1, index) for a speech vector) for the prefix cache."""
        conv, audios = to_marked(messages)
        m = self.model
        text = m.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        pieces = text.split(MARKER)
        speech = [self.speech_vectors(a) for a in audios]
        out: list[torch.Tensor] = []
        keys: list[Hashable] = []
        for k, piece in enumerate(pieces):
            if piece:
                ids = m._ids(piece)
                out.append(m.embed(ids))
                keys += ids
            if k < len(speech):
                sha, vecs = speech[k]
                out.append(vecs)
                keys += [(sha, i) for i in range(len(vecs))]
        return torch.cat(out), keys

    def prompt_embeddings(self, messages: list[Message]) -> torch.Tensor:
        """[L, H] input embeddings of the chat, the adapter's vectors where the audio parts were."""
        return self.prompt(messages)[0]

    def _pieces(self, emb: torch.Tensor, p: GenParams, keys: list[Hashable] | None = None,
                info: dict[str, float] | None = None) -> Iterator[str]:
        """The reply text as it is generated (greedy, or sampled with the request's seed), cut at stop strings."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancel = threading.Event()

        class _Cancel(StoppingCriteria):  # a reply cut at a stop string ends generation there, not at max_tokens
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        streamer = TextIteratorStreamer(self.model.tokenizer, skip_prompt=False, skip_special_tokens=True)
        kw = ({"do_sample": True, "temperature": p.temperature, "top_p": p.top_p} if p.temperature > 0
              else {"do_sample": False})
        error: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock, torch.inference_mode():
                    if p.seed is not None:
                        torch.manual_seed(p.seed)
                    kv, reused = self.prefixes.lookup(keys) if keys else (None, 0)
                    if info is not None:  # prompt positions whose keys/values came from the prefix cache
                        info.update(prompt_tokens=float(len(emb)), cached_prompt_tokens=float(reused))
                    extra = {self.prefixes.kwarg: kv} if kv is not None else {}
                    self.model.llm.generate(
                        inputs_embeds=emb[None], attention_mask=torch.ones(1, len(emb), dtype=torch.long),
                        max_new_tokens=p.max_tokens, eos_token_id=self.end_id, pad_token_id=self.end_id,
                        streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancel()]), **extra, **kw)
                    if kv is not None:  # holds the prompt even when the consumer stopped early
                        self.prefixes.store(keys, kv)
            except Exception as e:  # noqa: BLE001 -- re-raised in the caller's thread
                error.append(e)
                streamer.end()

        worker = threading.Thread(target=work, name="spokentod-speechlm", daemon=True)
        worker.start()
        try:
            yield from until_stop(streamer, p.stop or [])
        finally:
            cancel.set()
            worker.join()
            if error:
                raise error[0]

    @torch.no_grad()
    def respond(self, messages: list[Message], params: GenParams | None = None) -> AudioReply:
        p = params or GenParams()
        t0 = time.perf_counter()
        emb, keys = self.prompt(messages)
        info: dict[str, float] = {}
        if self.tts is None:
            text = "".join(self._pieces(emb, p, keys, info)).strip()
            return AudioReply(text=text, timings=Timings(wall=time.perf_counter() - t0, extra=info))
        from spokentod.systems.sentences import sentence_chunks  # the cascade's chunker

        pieces: list[str] = []
        audio: list[AudioOut] = []
        first = None
        tts_s = 0.0

        def tee() -> Iterator[str]:
            for piece in self._pieces(emb, p, keys, info):
                pieces.append(piece)
                yield piece

        for chunk in sentence_chunks(tee()):
            if not chunk.strip():
                continue
            t1 = time.perf_counter()
            audio.append(self.tts.synthesize(chunk.strip(), self.voice))
            tts_s += time.perf_counter() - t1
            if first is None:
                first = time.perf_counter() - t0
        wall = time.perf_counter() - t0
        out = None
        if audio:
            rate = audio[0].rate
            out = AudioOut(np.concatenate([a.samples for a in audio]).astype(np.float32), rate)
        return AudioReply(text="".join(pieces).strip(), audio=out,
                          timings=Timings(wall=wall, first=first, extra={"tts": tts_s, "chunks": float(len(audio)),
                                                                         **info}))
