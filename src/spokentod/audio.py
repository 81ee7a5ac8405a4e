"""Audio at the edge: read any common format, downmix, resample once (soxr), with bounds checks."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from spokentod.atomic import atomic_write
from spokentod.errors import AudioError

MAX_SECONDS = 600.0  # one user turn / reply; a 2-hour file is a mistake, not a turn


@dataclass
class Waveform:
    samples: np.ndarray  # float32 mono in [-1, 1]
    rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate if self.rate else 0.0


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.dtype.kind == "i":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:  # (frames, channels) as soundfile returns
        x = x.mean(axis=1)
    return x


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32)


def load_audio(src: str | os.PathLike | bytes, target_rate: int | None = 16000,
               max_seconds: float = MAX_SECONDS, allow_empty: bool = False) -> Waveform:
    """Read WAV/FLAC/OGG/MP3 (anything libsndfile reads) from a path or bytes into float32 mono."""
    name = "<bytes>" if isinstance(src, (bytes, bytearray)) else str(src)
    try:
        handle = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src
        info = sf.info(handle)
        if info.duration > max_seconds:
            raise AudioError(f"{name}: audio is {info.duration:.1f} s, over the {max_seconds:.0f} s limit")
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
        data, rate = sf.read(handle, dtype="float32", always_2d=False)
    except AudioError:
        raise
    except Exception as e:  # noqa: BLE001 - soundfile raises LibsndfileError / RuntimeError on corrupt or truncated data
        raise AudioError(f"{name}: unreadable audio ({e})") from None
    x = to_mono_float(data)
    if len(x) == 0 and not allow_empty:
        raise AudioError(f"{name}: audio is empty")
    if target_rate:
        x = resample(x, rate, target_rate)
        rate = target_rate
    return Waveform(x, rate)


def from_array(samples: np.ndarray, rate: int, target_rate: int | None = 16000,
               max_seconds: float = MAX_SECONDS) -> Waveform:
    x = to_mono_float(samples)
    if len(x) / rate > max_seconds:
        raise AudioError(f"audio is {len(x) / rate:.1f} s, over the {max_seconds:.0f} s limit")
    if target_rate:
        x, rate = resample(x, rate, target_rate), target_rate
    return Waveform(x, rate)


def write_wav(path: str | os.PathLike, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV, written atomically so a crash never leaves a partial file."""
    clipped = np.clip(samples, -1.0, 1.0)
    atomic_write(path, lambda f: sf.write(f, clipped, rate, subtype="PCM_16", format="WAV"))


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def is_silent(samples: np.ndarray, threshold: float = 1e-4) -> bool:
    return len(samples) == 0 or float(np.sqrt(np.mean(np.square(samples)))) < threshold


def as_waveform(audio, rate: int | None = None, target_rate: int | None = 16000,
                max_seconds: float = MAX_SECONDS) -> Waveform:
    """Accept a path, WAV/FLAC/... bytes, a Waveform, an object with .samples/.rate (AudioOut), or an
    array (then `rate` is required); return float32 mono at `target_rate`."""
    if isinstance(audio, Waveform):
        return from_array(audio.samples, audio.rate, target_rate, max_seconds)
    if hasattr(audio, "samples") and hasattr(audio, "rate"):
        return from_array(audio.samples, audio.rate, target_rate, max_seconds)
    if isinstance(audio, np.ndarray):
        if not rate:
            raise AudioError("a raw sample array needs its sample rate")
        return from_array(audio, rate, target_rate, max_seconds)
    return load_audio(audio, target_rate, max_seconds)
