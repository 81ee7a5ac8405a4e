"""Helpers shared by the Hugging Face (transformers) backends: device, dtype, threads, identity."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def set_threads(threads: int | None) -> None:
    """torch's intra-op thread count is process-wide; only touch it when the config asks."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str | None) -> Any:
    """'float32' / 'bfloat16' / 'float16' → torch dtype; 'auto' lets transformers read the checkpoint's."""
    if dtype in (None, "auto"):
        return "auto"
    import torch

    try:
        return getattr(torch, str(dtype).removeprefix("torch."))
    except AttributeError:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto") from None


def dtype_name(model: Any) -> str:
    return str(getattr(model, "dtype", "")).removeprefix("torch.")


def is_local(model: str | os.PathLike) -> bool:
    return Path(model).expanduser().exists()


def fingerprint(path: str | os.PathLike) -> str:
    """Cheap content key of a local model dir: config bytes + weight file names and sizes. Hashing gigabytes
    of weights on every start would cost more than loading them."""
    p = Path(path).expanduser()
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(p.iterdir())
    for f in files:
        if f.name.endswith(".json"):
            h.update(f.name.encode() + f.read_bytes())
        elif f.name.endswith(WEIGHT_SUFFIXES):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def model_identity(model: str | os.PathLike, revision: str | None, loaded: Any = None) -> dict[str, Any]:
    """Local path → absolute path + fingerprint; hub id → id + revision (resolved commit when known)."""
    if is_local(model):
        return {"model": str(Path(model).expanduser().resolve()), "fingerprint": fingerprint(model)}
    commit = getattr(getattr(loaded, "config", None), "_commit_hash", None)
    return {"model": str(model), "revision": commit or revision}


def split_windows(
    x: np.ndarray, rate: int, window_s: float = 30.0, search_s: float = 5.0, frame_s: float = 0.05
) -> list[np.ndarray]:
    """Cut audio into pieces of at most `window_s` (Whisper-style encoders see 30 s at a time), each ending
    at the quietest `frame_s` frame in its last `search_s`, so a cut rarely lands inside a word."""
    win, search, frame = int(window_s * rate), int(search_s * rate), max(1, int(frame_s * rate))
    out, start = [], 0
    while len(x) - start > win:
        lo, hi = start + win - search, start + win
        n = (hi - lo) // frame
        energy = np.square(x[lo : lo + n * frame]).reshape(n, frame).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        out.append(x[start:cut])
        start = cut
    out.append(x[start:])
    return out
