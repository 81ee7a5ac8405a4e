"""End-to-end spoken DST model: speech encoder → connector → causal LLM with LoRA, plus a text encoder.

Layout of one sequence (left to right, as in the reference recipe):

    [bos] [prefix embeddings] [prompt tokens: history + instruction] [target tokens] [eos]

The prefix is the connector's output for the user's speech (``mode="speech"``), the text encoder's output
for an unpaired text turn (``"text_encoder"``), the LLM's own embeddings of the user text (``"text_direct"``:
the reference recipe's "text fed to the LM without the encoder" ablation and our cascade baseline), or nothing.
Loss is cross-entropy over the target and eos only. Training pads on the right; generation pads on the
left with matching attention masks and position ids, so a batch gives the same outputs as batch size 1
(padding frames are zeroed after each convolution, so the connector too is batch invariant).

Trainable parts by phase (``set_phase``): "asr" — connector (+ the speech encoder when not frozen);
"dst" — LoRA + connector + text encoder. The LLM's base weights never train.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from spokentod.atomic import atomic_write
from spokentod.backends._hf import resolve_dtype
from spokentod.backends.llm import _gguf, gemma3, smollm2
from spokentod.dst.data.examples import apply_update, compact_state, format_history, state_update, target_json
from spokentod.dst.model.config import ConnectorConfig, ModelConfig, PrefixMode, TextEncoderConfig
from spokentod.dst.model.decode import greedy
from spokentod.dst.model.encoders import build_encoder
from spokentod.dst.model.modes import eval_mode
from spokentod.errors import SpokenTODError

IGNORE = -100


def stack_sequences(seqs: list[tuple[Tensor, Tensor]], left: bool, multiple: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """(embeddings [L_i, H], labels [L_i]) per example → padded embeddings [B, L, H], attention mask and
    labels (IGNORE where padded); ``left`` pads on the left (generation), else on the right (training).
    L is rounded up to a multiple of ``multiple`` (see BF16_PAD_MULTIPLE)."""
    n = -(-max(e.shape[0] for e, _ in seqs) // multiple) * multiple
    b, h = len(seqs), seqs[0][0].shape[1]
    emb = seqs[0][0].new_zeros(b, n, h)
    mask = torch.zeros(b, n, dtype=torch.long, device=emb.device)
    labels = torch.full((b, n), IGNORE, dtype=torch.long, device=emb.device)
    for i, (e, lab) in enumerate(seqs):
        sl = slice(n - len(e), n) if left else slice(0, len(e))
        emb[i, sl], mask[i, sl], labels[i, sl] = e, 1, lab
    return emb, mask, labels


def labelled_logits(llm: nn.Module, seqs: list[tuple[Tensor, Tensor]], multiple: int = 1) -> tuple[Tensor, Tensor]:
    """(float32 logits [N, V], their target tokens [N]) at every position of the right-padded sequences that
    predicts a labelled token, in (sequence, position) order: two batches with the same labels line up row
    for row."""
    emb, mask, labels = stack_sequences(seqs, left=False, multiple=multiple)
    # Vocabulary logits only where some example predicts a target token (position t predicts t+1):
    # the prefix and prompt need none, which saves a large share of the step on a small LLM.
    keep = (labels[:, 1:] != IGNORE).any(0).nonzero().squeeze(1)
    logits = llm(inputs_embeds=emb, attention_mask=mask, logits_to_keep=keep).logits
    targets = labels[:, keep + 1]
    rows = targets != IGNORE
    return logits[rows].float(), targets[rows]


def target_loss(llm: nn.Module, seqs: list[tuple[Tensor, Tensor]], multiple: int = 1) -> Tensor:
    """Mean cross-entropy of a causal LM over the labelled positions of right-padded sequences."""
    return nn.functional.cross_entropy(*labelled_logits(llm, seqs, multiple))


# A CPU's bf16 matmuls (oneDNN) build a kernel and repack the weights for every new matrix shape, and a
# training batch's length is new almost every step: padded to a multiple of 64 the shapes repeat, and a
# bf16 phase-2 step of S runs 1.18x faster than unpadded, 1.28x faster than float32 (which padding does not
# help). The padded positions are masked and unlabelled: the loss is the same.
BF16_PAD_MULTIPLE = 64


def ctc_best(frames: Tensor, embeddings: Tensor, blank: Tensor) -> Tensor:
    """Best class per connector frame over the LLM's token embeddings + a blank vector (index = vocabulary
    size) [B, T]; no gradient. The CTC head of the speech adapter (adapter/model.py)."""
    with torch.no_grad():
        classes = torch.cat([embeddings, blank[None]]).T
        return torch.stack([(f @ classes).argmax(-1) for f in frames])


SOFT_TOP_K = 16  # soft tokens mix the head's k likeliest tokens; the tail of its distribution is left out


def ctc_soft(frames: Tensor, embeddings: Tensor, blank: Tensor, log_scale: Tensor,
             k: int = SOFT_TOP_K) -> tuple[Tensor, Tensor]:
    """The CTC head's best class per frame [B, T] (as ctc_best) and each frame's soft token [B, T, H]: the
    embeddings of its k likeliest vocabulary tokens, weighted by the head's softmax over them (blank left
    out). What the LLM then reads lies among its own text embeddings, and the gradient reaches the frames
    through the weights. Top-k, not the full vocabulary: a [B, T, 49k] softmax and its gradient would cost
    more than the LLM step it feeds."""
    with torch.no_grad():
        classes = torch.cat([embeddings, blank[None]]).T
        logits = torch.stack([f @ classes for f in frames])
        best, top = logits.argmax(-1), logits[..., :-1].topk(k, -1).indices
    cand = embeddings[top]  # [B, T, k, H]
    weights = (log_scale.exp() * torch.einsum("bth,btkh->btk", frames, cand)).softmax(-1)
    return best, torch.einsum("btk,btkh->bth", weights, cand)


def ctc_read(mode: str, frames: Tensor, lengths: Tensor, embeddings: Tensor, blank: Tensor,
             log_scale: Tensor) -> list[Tensor]:
    """What the LLM reads per utterance under compression ``mode``: "ctc" the mean connector frame of each
    CTC segment, "soft" the mean soft token (ctc_soft) of each segment."""
    if mode == "soft":
        best, soft = ctc_soft(frames, embeddings, blank, log_scale)
        return ctc_segments(soft, lengths, best, embeddings.shape[0])
    return ctc_segments(frames, lengths, ctc_best(frames, embeddings, blank), embeddings.shape[0])


def ctc_segments(frames: Tensor, lengths: Tensor, best: Tensor, blank_id: int) -> list[Tensor]:
    """CTC compression of [B, P, H] frames: one mean vector per run of the same non-blank best class
    (`best` from ctc_best). An utterance whose frames are all blank keeps its frames (nothing is better than
    silence). The segmentation is discrete; the gradient flows through the means."""
    out = []
    for f, row, n in zip(frames, best, lengths.tolist()):
        f, row = f[:n], row[:n]
        start = torch.ones(n, dtype=torch.bool, device=f.device)
        start[1:] = row[1:] != row[:-1]
        group = start.cumsum(0) - 1
        means = torch.zeros(int(group[-1]) + 1, f.shape[1], device=f.device, dtype=f.dtype).index_add(0, group, f)
        means = means / torch.bincount(group).to(f.dtype)[:, None]
        keep = row[start] != blank_id
        out.append(means[keep] if keep.any() else f)
    return out


def resolve_llm(name: str) -> str:
    """An embedded name → its converted local directory; anything else is passed to from_pretrained."""
    if name == "smollm2":
        src = smollm2.gguf_path()
        sha = _gguf.sha256_cached(src, _gguf.cache_dir("models") / f"{smollm2.SLUG}.sha256.json")
        return str(_gguf.ensure_converted(smollm2.SLUG, sha, lambda: src))
    if name == "gemma3-270m":
        return str(gemma3.converted_model_dir())
    return name


def sinusoidal(n: int, dim: int) -> Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


def padding_mask(lengths: Tensor, n: int) -> Tensor:
    """True at padded positions ([B, n]), the convention of nn.TransformerEncoder."""
    return torch.arange(n, device=lengths.device)[None, :] >= lengths[:, None]


def _transformer(width: int, layers: int, heads: int, ff: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, ff, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
    # No nested-tensor fast path: it changes numerics with the amount of padding (batch invariance).
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)


class Connector(nn.Module):
    """Conv1d (k7, s3) → GELU → Conv1d (k7, s2) → GELU → sinusoidal positions → Transformer → projection."""

    def __init__(self, in_dim: int, out_dim: int, cfg: ConnectorConfig):
        super().__init__()
        self.cfg = cfg
        k = cfg.kernel
        self.convs = nn.ModuleList([
            nn.Conv1d(in_dim, cfg.width, k, stride=cfg.strides[0], padding=k // 2),
            nn.Conv1d(cfg.width, cfg.width, k, stride=cfg.strides[1], padding=k // 2),
        ])
        self.transformer = _transformer(cfg.width, cfg.layers, cfg.heads, cfg.ff, cfg.dropout)
        self.proj = nn.Linear(cfg.width, out_dim)
        self.register_buffer("positions", sinusoidal(cfg.max_positions, cfg.width), persistent=False)

    def out_lengths(self, lengths: Tensor) -> Tensor:
        k = self.cfg.kernel
        for s in self.cfg.strides:
            lengths = (lengths + 2 * (k // 2) - k) // s + 1
        return lengths

    def contextualize(self, h: Tensor, lengths: Tensor) -> Tensor:
        """Positions + Transformer + projection on [B, T, width]; shared by the speech and text paths."""
        if h.shape[1] > self.cfg.max_positions:
            raise ValueError(f"{h.shape[1]} connector frames exceed max_positions={self.cfg.max_positions} "
                             f"(input too long; raise connector.max_positions)")
        h = h + self.positions[: h.shape[1]].to(h.dtype)
        h = self.transformer(h, src_key_padding_mask=padding_mask(lengths, h.shape[1]))
        return self.proj(h)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """feats [B, T, in_dim] zero-padded → ([B, T', out_dim], lengths')."""
        x = feats.transpose(1, 2)
        k = self.cfg.kernel
        for conv, s in zip(self.convs, self.cfg.strides):
            x = nn.functional.gelu(conv(x))
            lengths = (lengths + 2 * (k // 2) - k) // s + 1
            # Zero the padded tail so the next convolution sees what batch size 1 would (its zero padding).
            x = x.masked_fill(padding_mask(lengths, x.shape[2])[:, None, :], 0.0)
        return self.contextualize(x.transpose(1, 2), lengths), lengths


class TextEncoder(nn.Module):
    """Token embeddings → Transformer of the connector's width; the caller then runs the connector's
    Transformer and projection (Connector.contextualize), skipping the convolutions."""

    def __init__(self, vocab: int, llm_embeddings: nn.Embedding, cfg: TextEncoderConfig, conn: ConnectorConfig):
        super().__init__()
        self.mode = cfg.mode
        if cfg.mode == "embedding":
            self.embed = nn.Embedding(vocab, conn.width)
        else:
            self._llm_embeddings = [llm_embeddings]  # a list: not registered, so not saved or trained here
            self.embed_proj = nn.Linear(llm_embeddings.embedding_dim, conn.width)
        self.transformer = _transformer(conn.width, cfg.layers, conn.heads, conn.ff, conn.dropout)
        self.register_buffer("positions", sinusoidal(conn.max_positions, conn.width), persistent=False)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        if self.mode == "embedding":
            h = self.embed(ids)
        else:
            with torch.no_grad():
                e = self._llm_embeddings[0](ids)
            h = self.embed_proj(e.to(self.embed_proj.weight.dtype))
        h = h + self.positions[: h.shape[1]].to(h.dtype)
        return self.transformer(h, src_key_padding_mask=padding_mask(lengths, h.shape[1]))


RUNAWAY_PERIOD = 8  # the longest repeating pattern (in tokens) that no_runaway stops


def no_runaway(input_ids: Tensor, scores: Tensor) -> Tensor:
    """Logits processor: forbid the token that would repeat a loop once more. Greedy decoding from speech
    now and then falls into a loop ("... there either either either", then "- or - or - or") until
    max_new_tokens, and the state that should follow the transcript is lost with it (1 of 190 test turns of
    the shipped tracker). A loop here is a pattern of p ≤ 8 tokens already said 3 times running (one token:
    4 times): speech rarely does that, and the state JSON never does (its keys and values differ).
    ``input_ids`` holds only the generated tokens: the prompt goes in as embeddings."""
    n = input_ids.shape[1]
    for p in range(1, RUNAWAY_PERIOD + 1):
        span = p * (4 if p == 1 else 3)
        if n < span:
            break
        tail = input_ids[:, -span:]
        rows = (tail[:, p:] == tail[:, :-p]).all(dim=1).nonzero().squeeze(1)
        scores[rows, input_ids[rows, -p]] = float("-inf")
    return scores


class SpeechDST(nn.Module):
    def __init__(self, cfg: ModelConfig, llm: nn.Module, tokenizer, feature_dim: int):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.llm = llm
        emb = llm.get_input_embeddings()
        hidden = emb.embedding_dim
        self.connector = Connector(feature_dim, hidden, cfg.connector)
        if cfg.compress != "none":  # the speech adapter's CTC head (same names: its weights load as they are)
            self.ctc_blank = nn.Parameter(torch.zeros(hidden))
            self.ctc_log_scale = nn.Parameter(torch.zeros(()))
        self.segment_counts = [0, 0]  # ctc: speech segments, connector frames (see prefix)
        self.text_encoder = TextEncoder(len(tokenizer), emb, cfg.text_encoder, cfg.connector)
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        if tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer of {cfg.llm!r} has no eos token")
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.pad_multiple = 1  # training batches' length rounded up to this (store_frozen_linears)

    @classmethod
    def build(cls, cfg: ModelConfig, feature_dim: int, device: str = "cpu") -> SpeechDST:
        """Load the LLM and tokenizer, wrap the LLM with LoRA (peft) and create connector + text encoder.
        `feature_dim` is the speech encoder's output width (SpeechEncoder.dim)."""
        from peft import LoraConfig, get_peft_model  # heavy: only when a model is built
        from transformers import AutoModelForCausalLM, AutoTokenizer


        path = resolve_llm(cfg.llm)
        tok = AutoTokenizer.from_pretrained(path)
        kw = {"dtype": resolve_dtype(cfg.dtype)}
        if cfg.attn_implementation:
            kw["attn_implementation"] = cfg.attn_implementation
        base = AutoModelForCausalLM.from_pretrained(path, **kw)
        lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
        model = cls(cfg, get_peft_model(base, lora), tok, feature_dim).to(device)
        model.set_phase("dst")
        return model

    # ------------------------------------------------------------------ parameters

    def set_phase(self, phase: Literal["asr", "dst"], train_encoder: bool = False) -> None:
        for name, p in self.llm.named_parameters():
            p.requires_grad = phase == "dst" and "lora_" in name
        for p in self.connector.parameters():
            p.requires_grad = True
        for p in self.text_encoder.parameters():
            p.requires_grad = phase == "dst"
        for name, p in self.named_parameters(recurse=False):  # the CTC head: no DST loss trains it
            p.requires_grad = not name.startswith("ctc_")
        self.phase = phase

    def attach_encoder(self, encoder) -> None:
        """Keep the speech encoder with the model; a trainable (unfrozen) one becomes a submodule, so its
        weights are trained, checkpointed and moved with the rest."""
        self.encoder = encoder
        if getattr(encoder, "trainable", False):
            self.add_module("speech_encoder", encoder.module)

    def store_frozen_linears(self, dtype: torch.dtype) -> int:
        """Keep the LLM's frozen Linear weights in `dtype` (bfloat16 for a bf16-autocast run). Autocast casts
        a weight to bf16 at every call, and caches the cast only for weights that require grad: with LoRA that
        is a full copy of the frozen LLM per forward, which on a CPU costs about what bf16 saves. The matmuls
        see the same bf16 values either way. The output head (SmolLM2 ties it to the input embeddings, which
        soft tokens read), the norms and the LoRA weights (frozen in phase 1) stay as they are. In bf16,
        training batches are padded to BF16_PAD_MULTIPLE tokens. Returns how many weights were cast."""
        if dtype == torch.bfloat16:
            self.pad_multiple = BF16_PAD_MULTIPLE
        head = self.llm.get_output_embeddings()
        # by weight, not module: a LoRA-wrapped head (lm_head in target_modules) is a wrapper whose base_layer
        # is the Linear to skip, and a tied head shares the embeddings' weight
        head_weight = getattr(head, "weight", None)
        n = 0
        for name, mod in self.llm.named_modules():
            if (isinstance(mod, nn.Linear) and mod.weight is not head_weight and not mod.weight.requires_grad
                    and "lora_" not in name):
                mod.weight.data = mod.weight.data.to(dtype)
                n += 1
        return n

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """What a checkpoint holds: LoRA, connector, text encoder and a trainable speech encoder (the base
        LLM and a frozen encoder are reloaded from their paths)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()
                if k.startswith(("connector.", "text_encoder.", "speech_encoder.", "ctc_")) or "lora_" in k}

    def load_trainable_state_dict(self, sd: dict[str, Tensor], omitted: tuple[str, ...] = ()) -> None:
        """Load deltas; keys under an `omitted` prefix may be absent (a shipped tracker leaves out the parts its
        mode never reads) and keep their initial values."""
        own = self.trainable_state_dict()
        missing = sorted(k for k in set(own) - set(sd) if not (omitted and k.startswith(omitted)))
        unexpected = sorted(set(sd) - set(own))
        if missing or unexpected:
            raise ValueError(f"checkpoint does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.load_state_dict(sd, strict=False)

    def save_pretrained(self, out: str | os.PathLike) -> None:
        """model.json (config + feature width) and trainable.safetensors (deltas only: a few MB)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"config": self.cfg.model_dump(mode="json"), "feature_dim": self.connector.convs[0].in_channels}
        atomic_write(out / "trainable.safetensors",
                     save({k: v.contiguous() for k, v in self.trainable_state_dict().items()}))
        (out / "model.json").write_text(json.dumps(meta, indent=1))

    def load_speech_adapter(self, path: str | os.PathLike) -> None:
        """Start from a trained speech adapter (spokentod adapter train; "embedded" is the shipped one): its
        connector and CTC head become this model's — phase 1 done. The adapter's LLM, encoder, connector and
        compression must be this model's; a SpokenTODError names every field that differs."""
        from spokentod.adapter import adapter_dir
        from spokentod.adapter.model import SpeechAdapter

        path = adapter_dir(path)
        try:
            meta = json.loads((path / "adapter.json").read_text())
            a = meta["config"]
        except (OSError, ValueError, KeyError) as e:
            raise SpokenTODError(f"{path}: not a speech adapter ({e})") from None
        ours = self.cfg.model_dump(mode="json")
        runtime = {"device", "threads", "batch_size", "dropout"}  # how it runs, not what it computes
        diffs = [f"model.{k}: adapter {a.get(k)!r}, recipe {ours[k]!r}" for k in ("llm", "compress")
                 if a.get(k) != ours[k]]
        for k in ("encoder", "connector"):
            diffs += [f"model.{k}.{f}: adapter {a.get(k, {}).get(f)!r}, recipe {v!r}" for f, v in ours[k].items()
                      if f not in runtime and a.get(k, {}).get(f) != v]
        if meta.get("feature_dim") != self.connector.convs[0].in_channels:
            diffs.append(f"encoder width: adapter {meta.get('feature_dim')}, recipe {self.connector.convs[0].in_channels}")
        if diffs:
            raise SpokenTODError(f"{path}: the speech adapter does not fit this model — " + "; ".join(diffs))
        state = SpeechAdapter.load_weights(path)
        mine = {k: v for k, v in state.items() if k.startswith(("connector.", "ctc_"))}
        self.load_state_dict({k: v.to(self.device) for k, v in mine.items()}, strict=False)

    omitted: tuple[str, ...] = ()  # delta prefixes a shipped checkpoint left out (model.json "omitted")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu") -> SpeechDST:
        path = Path(path)
        try:
            meta = json.loads((path / "model.json").read_text())
        except (OSError, ValueError) as e:
            raise SpokenTODError(f"{path} is not a SpeechDST checkpoint (model.json: {e})") from None
        cfg = ModelConfig.model_validate(meta["config"])
        model = cls.build(cfg, meta["feature_dim"], device)
        deltas = cls.load_deltas(path, device)
        if any(k.startswith("speech_encoder.") for k in deltas):  # trained encoder weights travel along
            model.attach_encoder(build_encoder(cfg.encoder.model_copy(update={"device": str(device)})))
        model.omitted = tuple(meta.get("omitted", ()))
        model.load_trainable_state_dict(deltas, model.omitted)
        return model

    @staticmethod
    def load_deltas(path: str | os.PathLike, device: str = "cpu") -> dict[str, Tensor]:
        return load_file(str(Path(path) / "trainable.safetensors"), device=str(device))

    @property
    def device(self) -> torch.device:
        return self.connector.proj.weight.device

    # ------------------------------------------------------------------ inputs

    def dst_prompt(self, history: list[tuple[str, str]] | tuple, prev_state: dict | None = None) -> str:
        """The text after the prefix: the history, the previous state (with carry_state) and the instruction."""
        carried = f"state: {compact_state(prev_state or {})}\n" if self.cfg.carry_state else ""
        return f"\n{format_history(history, self.cfg.history)}\n{carried}{self.cfg.dst_instruction}\n"

    def dst_target(self, transcript: str, state: dict, prev_state: dict | None = None) -> str:
        """What the model learns to write: transcript and state (with carry_state: the state's update)."""
        return target_json(transcript, state_update(prev_state or {}, state) if self.cfg.carry_state else state)

    def read_state(self, parsed_state: dict, prev_state: dict | None = None) -> dict:
        """The dialogue state a parsed output stands for (with carry_state: `prev_state` with it applied)."""
        return apply_update(prev_state or {}, parsed_state) if self.cfg.carry_state else parsed_state

    def asr_prompt(self) -> str:
        return f"\n{self.cfg.asr_instruction}\n"

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def _padded(self, seqs: list[list[int]]) -> tuple[Tensor, Tensor]:
        n = max(1, max(map(len, seqs)))
        ids = torch.full((len(seqs), n), self.pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return ids.to(self.device), torch.tensor([len(s) for s in seqs], device=self.device)

    def prefix(self, mode: PrefixMode, feats: list[Tensor] | Tensor | None = None,
               feat_lengths: Tensor | None = None, texts: list[str] | None = None) -> tuple[Tensor, Tensor]:
        """Prefix embeddings [B, P, H] and their lengths. Speech takes encoder features (a list of [T_i, D]
        or a padded [B, T, D] with `feat_lengths`); the text modes take the user turns' text."""
        hidden = self.llm.get_input_embeddings().embedding_dim
        if mode == "speech":
            if isinstance(feats, list):
                feat_lengths = torch.tensor([f.shape[0] for f in feats], device=self.device)
                feats = nn.utils.rnn.pad_sequence([f.to(self.device) for f in feats], batch_first=True)
            feats = feats.to(device=self.device, dtype=self.connector.proj.weight.dtype)
            frames, lengths = self.connector(feats, feat_lengths.to(self.device))
            if self.cfg.compress == "none":
                return frames, lengths
            segs = ctc_read(self.cfg.compress, frames, lengths, self.llm.get_input_embeddings().weight,
                            self.ctc_blank, self.ctc_log_scale)
            # phase 2 moves the connector under a fixed CTC head: the segment count per frame shows whether
            # the segmentation drifts (training logs it per step; reset by whoever reads it)
            if self.training:
                self.segment_counts[0] += sum(len(x) for x in segs)
                self.segment_counts[1] += int(lengths.sum())
            return (nn.utils.rnn.pad_sequence(segs, batch_first=True),
                    torch.tensor([len(x) for x in segs], device=self.device))
        if texts is None:
            raise ValueError(f"prefix mode {mode!r} needs texts")
        if mode == "none":
            b = len(texts)
            return torch.zeros(b, 0, hidden, device=self.device), torch.zeros(b, dtype=torch.long, device=self.device)
        ids, lengths = self._padded(self._ids(texts))
        if mode == "text_direct":
            return self.llm.get_input_embeddings()(ids), lengths
        if mode == "text_encoder":
            return self.connector.contextualize(self.text_encoder(ids, lengths), lengths), lengths
        raise ValueError(f"unknown prefix mode {mode!r}")

    def _sequences(self, prefix: Tensor, prefix_lengths: Tensor, prompts: list[str],
                   targets: list[str] | None) -> list[tuple[Tensor, Tensor]]:
        """Per example: (embeddings [L, H], labels [L]) of bos + prefix + prompt (+ target + eos)."""
        embed = self.llm.get_input_embeddings()
        out = []
        for i, prompt in enumerate(prompts):
            head = torch.tensor(self.bos, dtype=torch.long, device=self.device)
            p_ids = torch.tensor(self._ids([prompt])[0], dtype=torch.long, device=self.device)
            t_ids = (torch.tensor(self._ids([targets[i]])[0] + [self.eos], dtype=torch.long, device=self.device)
                     if targets is not None else p_ids[:0])
            pre = prefix[i, : int(prefix_lengths[i])]
            e = torch.cat([embed(head), pre.to(embed.weight.dtype), embed(p_ids), embed(t_ids)])
            labels = torch.cat([torch.full((len(head) + len(pre) + len(p_ids),), IGNORE, device=self.device), t_ids])
            out.append((e, labels))
        return out

    # ------------------------------------------------------------------ training and generation

    def loss(self, prefix: Tensor, prefix_lengths: Tensor, prompts: list[str], targets: list[str]) -> Tensor:
        """Mean cross-entropy over target tokens (and eos) of the batch."""
        return target_loss(self.llm, self._sequences(prefix, prefix_lengths, prompts, targets), self.pad_multiple)

    @torch.no_grad()
    def generate(self, prefix: Tensor, prefix_lengths: Tensor, prompts: list[str], max_new_tokens: int = 128,
                 num_beams: int = 1) -> list[str]:
        """Greedy (or beam) continuation of bos + prefix + prompt for each example; left padded. A token may
        not continue a loop (no_runaway). Greedy drops a row from the batch once it has said eos (decode.py)."""
        with eval_mode(self):  # no dropout (connector, LoRA) while decoding
            emb, mask, _ = stack_sequences(self._sequences(prefix, prefix_lengths, prompts, None), left=True)
            if num_beams == 1:
                out = greedy(self.llm, emb, mask, max_new_tokens, self.eos, no_runaway)
            else:
                from transformers import LogitsProcessorList

                # generate() derives position ids from the attention mask, so left padding shifts nothing.
                out = self.llm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
                                        num_beams=num_beams, do_sample=False, eos_token_id=self.eos,
                                        pad_token_id=self.pad, logits_processor=LogitsProcessorList([no_runaway]))
        return [self.tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in out]
