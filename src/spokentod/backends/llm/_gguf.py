"""GGUF → safetensors, once per machine, so embedded models load in well under a second.

transformers reads GGUF by dequantizing every tensor to float32 (~15–30 s for SmolLM2-135M on 2 cores,
most of it parsing), and a model loaded that way refuses `save_pretrained`. Building a fresh model from the
same config, loading the state dict into it and saving that works. The result lives in
``cache_dir("models", "<slug>-<sha256[:12]>")``; a completed directory always holds MARKER, written last
and moved into place with one rename, so a crash never leaves a half-converted model that looks finished.
A file lock makes concurrent processes (bench workers, tests) wait for one conversion instead of racing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spokentod.atomic import atomic_write, replace_dir
from spokentod.paths import cache_dir

MARKER = "spokentod-gguf.json"
LOCK_TIMEOUT_S = 1800  # a conversion takes well under a minute; an hour-old lock means a stuck peer


def sha256_cached(path: Path, memo: Path) -> str:
    """sha256 of a GGUF, remembered in `memo` (JSON) keyed by path, size and mtime, so it is hashed once."""
    st = path.stat()
    key = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        saved = json.loads(memo.read_text())
        if {k: saved.get(k) for k in key} == key:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    atomic_write(memo, json.dumps(key | {"sha256": h.hexdigest()}))
    return h.hexdigest()


def converted_dir(slug: str, sha256: str) -> Path:
    return cache_dir("models") / f"{slug}-{sha256[:12]}"


def is_converted(target: Path) -> bool:
    return (target / MARKER).is_file()


def ensure_converted(slug: str, sha256: str, gguf: Callable[[], Path]) -> Path:
    """Return the converted directory, converting first if needed. `gguf()` yields the .gguf path and is
    called only when converting (for Gemma it assembles a 250 MB file, which a warm start must skip)."""
    target = converted_dir(slug, sha256)
    if is_converted(target):
        return target
    from filelock import FileLock

    with FileLock(str(target.with_name(target.name + ".lock")), timeout=LOCK_TIMEOUT_S):
        if is_converted(target):  # another process finished while we waited
            return target
        src = Path(gguf())
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        meta = _convert(src, tmp) | {"gguf": src.name, "gguf_sha256": sha256}
        (tmp / MARKER).write_text(json.dumps(meta, indent=1))
        replace_dir(tmp, target)  # over an incomplete leftover (no MARKER) from a crash, if any
    return target


def _convert(src: Path, out: Path) -> dict[str, Any]:
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype="float32")
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are plain float32 now; drop the GGUF marker
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"dtype": "float32", "transformers": transformers.__version__}
