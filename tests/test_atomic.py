"""spokentod.atomic: temp file beside the target, then rename."""

from __future__ import annotations

import json
import os
import stat

import pytest

from spokentod.atomic import atomic_write, replace_dir, write_json


def _debris(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_bytes_str_and_callable(tmp_path):
    p = tmp_path / "a" / "b" / "f.bin"  # parents are created
    assert atomic_write(p, b"\x00\xff") == p
    assert p.read_bytes() == b"\x00\xff"
    assert atomic_write(str(p), "héllo\n") == p  # str path accepted, Path returned
    assert p.read_bytes() == "héllo\n".encode()
    atomic_write(p, lambda f: (f.write(b"one"), f.write(b"two")))
    assert p.read_bytes() == b"onetwo"
    assert _debris(p.parent) == []


def test_failing_callable_keeps_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(p, boom)
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]


def test_failing_rename_leaves_no_temp(tmp_path):
    target = tmp_path / "d"
    (target / "x").mkdir(parents=True)  # a non-empty directory cannot be replaced by a file
    with pytest.raises(OSError):
        atomic_write(target, b"data")
    assert _debris(tmp_path) == []


def test_fsync_path(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    p = atomic_write(tmp_path / "f", "x", fsync=True)
    assert p.read_text() == "x" and len(synced) == 1
    atomic_write(tmp_path / "g", "y")
    assert len(synced) == 1  # no fsync unless asked


def test_mode_follows_umask(tmp_path):
    # a plain open() would give 0666 & ~umask; the renamed temp file must not be stricter (mkstemp: 0600)
    old = os.umask(0o022)
    try:
        p = atomic_write(tmp_path / "f", b"")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_write_json_round_trip(tmp_path):
    obj = {"b": [1, 2.5, None], "a": "ü", "nested": {"t": True}}
    p = write_json(tmp_path / "x.json", obj)
    assert json.loads(p.read_text(encoding="utf-8")) == obj
    assert p.read_text(encoding="utf-8") == json.dumps(obj, indent=2) + "\n"
    write_json(p, obj, indent=None, ensure_ascii=False, sort_keys=True, fsync=True)
    assert p.read_text(encoding="utf-8") == '{"a": "ü", "b": [1, 2.5, null], "nested": {"t": true}}\n'


def test_write_json_unserializable_keeps_old(tmp_path):
    p = write_json(tmp_path / "x.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"ok": 1}
    assert _debris(tmp_path) == []


def test_replace_dir(tmp_path):
    dst = tmp_path / "ckpt"
    for content in ("first", "second"):
        src = tmp_path / ".ckpt.tmp"
        src.mkdir()
        (src / "f").write_text(content)
        assert replace_dir(src, dst) == dst
        assert (dst / "f").read_text() == content and not src.exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ckpt"]  # the .old copy is gone too
