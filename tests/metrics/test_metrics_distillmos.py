"""DistillMOS (metrics/distillmos.py): loaded without torchaudio, it rates clean Kokoro speech well above the
same speech with noise, agrees with DNSMOS on that ordering, and its loader refuses a release that would
need torchaudio for the model itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_metrics_audio import SENTENCES, _reply, speak

from spokentod.audio import load_audio, write_wav
from spokentod.metrics import distillmos as D
from spokentod.metrics.audio import _dnsmos_metric
from spokentod.metrics.registry import Missing, resolve


@pytest.mark.slow
def test_noise_lowers_distillmos_like_dnsmos(tmp_path):
    clean = speak(SENTENCES[1], "jf_alpha", tmp_path / "clean.wav")
    x = load_audio(clean, target_rate=16000).samples
    noise = np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    noise *= np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2)) / 10 ** (5 / 20)  # 5 dB SNR
    write_wav(tmp_path / "noisy.wav", x + noise, 16000)
    a = D._distillmos(_reply(clean), None).values["distillmos"]
    b = D._distillmos(_reply(tmp_path / "noisy.wav"), None).values["distillmos"]
    assert 3.0 < a <= 5.0 and 1.0 <= b < a - 1.0, (a, b)
    dn = [_dnsmos_metric(_reply(p), None).values["dnsmos_ovrl"] for p in (clean, tmp_path / "noisy.wav")]
    assert dn[0] > dn[1]  # both predictors order the pair the same way
    write_wav(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(Missing, match="silent audio"):
        D._distillmos(_reply(tmp_path / "silent.wav"), None)


@pytest.mark.slow
def test_loads_without_torchaudio_in_a_fresh_interpreter():
    code = ("import sys, numpy as np; from spokentod.metrics import distillmos as D; "
            "m = D.model(); v = m.predict(np.zeros(16000, np.float32) + 0.01 * np.sin(np.arange(16000)));"
            "print(repr(v), 'torchaudio' in sys.modules, 'distillmos' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    value, ta, pkg = out.split()
    assert 1.0 <= float(value) <= 5.0 and ta == "False" and pkg == "False"


def test_registered_with_its_identity():
    assert [g.name for g in resolve("distillmos")] == ["distillmos"]
    ident = D.identity()
    assert ident["distillmos"] == "0.9.1" and len(ident["weights_sha256"]) == 16


SQA = """
import torch
import torchaudio
class Model(torch.nn.Module):
    pass
def _infer_file_list(files):
    return torchaudio.load(files[0])
"""


def test_the_loader_drops_only_the_cli_import_and_refuses_other_uses(tmp_path):
    path = Path("sqa.py")
    kept = D._without_torchaudio(ast.parse(SQA), path)
    assert "import torchaudio" not in ast.unparse(kept) and "class Model" in ast.unparse(kept)
    with pytest.raises(D.DistillMOSUnavailable, match="outside its CLI"):
        D._without_torchaudio(ast.parse(SQA + "\nRESAMPLE = torchaudio.transforms.Resample\n"), path)
    with pytest.raises(D.DistillMOSUnavailable, match=r"\['Model'\]"):
        D._without_torchaudio(ast.parse(SQA.replace("pass", "t = torchaudio")), path)
