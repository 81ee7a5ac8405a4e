"""SpeechAdapter: frozen speech encoder features → trained connector → the frozen LLM's input embeddings.

The connector is the DST model's (two strided convolutions + a Transformer, ``dst.model``), so a trained
adapter is the DST model's phase 1 as is. The LLM has no LoRA and never trains: whatever the adapter
learns, the LLM keeps its chat ability, which is what lets the same weights serve as an end-to-end
speech-in LM.

Speech sits inside the user turn of the LLM's own chat format, where text would be:

    <|im_start|>user\\n{instruction}[speech embeddings]<|im_end|>\\n<|im_start|>assistant\\n{reply}<|im_end|>

ASR training uses an instruction and the transcript as the reply. No system prompt: it costs ~20 tokens a
step and the LLM answers the same without it. The instruction is the text "Transcribe: " or, with
``asr_prompt > 0``, that many learned vectors (initialised from it): SmolLM2-135M does not follow a text
instruction to copy (given "Transcribe: " and the exact transcript tokens it answers the sentence instead,
dev WER 123 %), and a learned prompt moves the task out of the connector, which then only has to make
speech read like text — what the end-to-end use needs. Only the ASR task uses the prompt.

Auxiliary CTC: each connector frame is scored against the LLM's (frozen, tied) token embeddings plus a
learned blank vector, ``logits = s · h @ [E; blank]ᵀ``, and CTC aligns them with the transcript's tokens.
It needs no LLM forward (cheap), and it pulls each frame towards the embedding of the token spoken there,
which is the space the LLM reads.

CTC compression (``compress: ctc``, after Gaido et al. 2021): the LLM does not read every connector frame
but one vector per CTC segment: each frame's best class over the full vocabulary + blank, runs of the same
class averaged into one vector, blank runs dropped. A 3-s turn becomes ~12 vectors instead of ~25 frames,
and each sits near the embedding of the token it stands for, so the frozen LLM reads speech much as it
reads text. The segmentation is discrete; the gradient flows through the averages.

Soft tokens (``compress: soft``, after LegoSLM, Ma et al. 2025, which feeds CTC posteriors over the LLM's
vocabulary to it as weighted sums of its input embeddings): the same segments, but each frame first becomes
the CTC head's soft token, its likeliest vocabulary embeddings weighted by the head's probabilities
(dst.model.speechdst.ctc_soft). What the LLM reads then lies among its own text embeddings, so the LLM phase
only has to teach the copy prompt, not a new input space; the CTC head (cheap to train) does the hearing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from spokentod.atomic import atomic_write
from spokentod.dst.model.config import ConnectorConfig, EncoderConfig
from spokentod.dst.model.decode import greedy
from spokentod.dst.model.modes import eval_mode
from spokentod.dst.model.speechdst import (
    IGNORE,
    Connector,
    ctc_best,
    ctc_read,
    resolve_llm,
    stack_sequences,
    target_loss,
)
from spokentod.errors import SpokenTODError


class AdapterError(SpokenTODError):
    pass


class AdapterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    llm: str = "smollm2"
    encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig(window="fit"))
    connector: ConnectorConfig = Field(default_factory=lambda: ConnectorConfig(
        width=384, layers=2, heads=4, ff=1536, dropout=0.1))
    compress: Literal["none", "ctc", "soft"] = "ctc"  # what the LLM reads: every frame, or CTC segments (mean
    # frame or mean soft token)
    asr_instruction: str = "Transcribe: "
    asr_prompt: int = Field(0, ge=0)  # learned instruction vectors for the ASR task (0: the text instruction)
    user_open: str = "<|im_start|>user\n"
    user_close: str = "<|im_end|>\n<|im_start|>assistant\n"
    reply_end: str = "<|im_end|>"


class SpeechAdapter(nn.Module):
    def __init__(self, cfg: AdapterConfig, llm: nn.Module, tokenizer, feature_dim: int):
        super().__init__()
        self.cfg, self.tokenizer, self.llm = cfg, tokenizer, llm
        self.llm.requires_grad_(False)
        hidden = llm.get_input_embeddings().embedding_dim
        self.connector = Connector(feature_dim, hidden, cfg.connector)
        self.ctc_blank = nn.Parameter(torch.zeros(hidden))
        self.ctc_log_scale = nn.Parameter(torch.zeros(()))
        self.feature_dim = feature_dim
        ids = self._ids
        self.open_ids, self.close_ids = ids(cfg.user_open), ids(cfg.user_close)
        self.asr_ids, self.end_ids = ids(cfg.asr_instruction), ids(cfg.reply_end)
        self.asr_prompt = None
        if cfg.asr_prompt:
            with torch.no_grad():
                init = self.embed(self.asr_ids)
            self.asr_prompt = nn.Parameter(init[torch.arange(cfg.asr_prompt) % len(init)].clone())

    @classmethod
    def build(cls, cfg: AdapterConfig, feature_dim: int) -> SpeechAdapter:
        from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only when a model is built

        path = resolve_llm(cfg.llm)
        llm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        return cls(cfg, llm.eval(), AutoTokenizer.from_pretrained(path), feature_dim)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def device(self) -> torch.device:
        return self.connector.proj.weight.device

    def train(self, mode: bool = True) -> SpeechAdapter:
        super().train(mode)
        self.llm.eval()  # frozen: never dropout in the LLM
        return self

    # ------------------------------------------------------------------ pieces

    def speech(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        """[T_i, D] encoder features → connector frames [B, P, H] and their lengths."""
        lengths = torch.tensor([f.shape[0] for f in feats], device=self.device)
        padded = nn.utils.rnn.pad_sequence([f.to(self.device) for f in feats], batch_first=True)
        return self.connector(padded, lengths)

    def ctc_classes(self, frames: Tensor) -> Tensor:
        """Best class per frame over the full vocabulary + blank (index ``vocab``) [B, T]; no gradient."""
        return ctc_best(frames, self.llm.get_input_embeddings().weight, self.ctc_blank)

    def segments(self, frames: Tensor, lengths: Tensor) -> list[Tensor]:
        """CTC compression of [B, P, H] frames under ``compress`` ctc or soft (dst.model.speechdst.ctc_read)."""
        return ctc_read(self.cfg.compress, frames, lengths, self.llm.get_input_embeddings().weight, self.ctc_blank,
                        self.ctc_log_scale)

    def speech_inputs(self, feats: list[Tensor]) -> list[Tensor]:
        """What the LLM reads for each utterance [N_i, H]: the connector frames or their CTC segments."""
        return self._llm_inputs(*self.speech(feats))

    def _llm_inputs(self, frames: Tensor, lengths: Tensor) -> list[Tensor]:
        if self.cfg.compress != "none":
            return self.segments(frames, lengths)
        return [frames[i, : int(lengths[i])] for i in range(len(frames))]

    def embed(self, ids: list[int]) -> Tensor:
        return self.llm.get_input_embeddings()(torch.tensor(ids, dtype=torch.long, device=self.device))

    def asr_instruction(self) -> Tensor:
        """The ASR task's instruction embeddings: the learned prompt, or the text instruction's."""
        return self.asr_prompt if self.asr_prompt is not None else self.embed(self.asr_ids)

    def user_turn(self, speech: Tensor, instruction: Tensor | None = None) -> Tensor:
        """Embeddings of one user turn whose content is the instruction (if any) then the speech."""
        head = [self.embed(self.open_ids)] + ([instruction] if instruction is not None else [])
        return torch.cat([*head, speech, self.embed(self.close_ids)])

    def labelled(self, head: Tensor, reply: list[int]) -> tuple[Tensor, Tensor]:
        """(embeddings, labels) of ``head`` followed by the ``reply`` tokens, only the reply labelled."""
        emb = torch.cat([head, self.embed(reply)])
        labels = torch.full((len(emb),), IGNORE, dtype=torch.long, device=self.device)
        labels[len(head):] = torch.tensor(reply, device=self.device)
        return emb, labels

    # ------------------------------------------------------------------ ASR training

    def asr_losses(self, feats: list[Tensor], texts: list[str], ce: bool = True,
                   replies: list[list[int] | None] | None = None, distill_items: int = 4) -> dict[str, Tensor]:
        """{"ctc": ..., "ce": ..., "kd": ...} for a batch; ``ce=False`` skips the LLM forward (CTC only).
        ``replies`` (per utterance: the LLM's cached reply to its text, or None) adds the distillation loss
        (adapter/distill.py) on the first ``distill_items`` utterances that have one."""
        frames, lengths = self.speech(feats)
        targets = [self._ids(t.strip()) for t in texts]
        out = {"ctc": self.ctc_loss(frames, lengths, targets)}
        kd = [i for i, r in enumerate(replies or []) if r][:distill_items]
        inputs = self._llm_inputs(frames, lengths) if ce or kd else []
        if kd:
            from spokentod.adapter.distill import distill_loss  # it imports this module

            out["kd"] = distill_loss(self, [inputs[i] for i in kd], [texts[i] for i in kd], [replies[i] for i in kd])
            out["kd_items"] = torch.tensor(float(len(kd)))  # how many got the loss (logged)
        if ce:
            instruction = self.asr_instruction()
            seqs = [self.labelled(self.user_turn(inputs[i], instruction), tgt + self.end_ids)
                    for i, tgt in enumerate(targets)]
            out["ce"] = target_loss(self.llm, seqs)
        return out

    def ctc_loss(self, frames: Tensor, lengths: Tensor, targets: list[list[int]], negatives: int = 1024) -> Tensor:
        """CTC over a sampled vocabulary: the batch's own target tokens, `negatives` other tokens drawn at
        random, and the blank. Over the full 49k vocabulary the loss and its dense gradient cost ~20 s a
        batch of 32 on 2 cores (measured); over ~1.3k classes it is a few hundredths of that."""
        emb = self.llm.get_input_embeddings().weight
        used = sorted({t for ts in targets for t in ts})
        pool = torch.randperm(len(emb), device=self.device)[: negatives + len(used)]
        seen = set(used)
        extra = [t for t in pool.tolist() if t not in seen][:negatives]
        ids = torch.tensor(used + extra, dtype=torch.long, device=self.device)
        index = {t: i for i, t in enumerate(used)}
        classes = torch.cat([emb[ids], self.ctc_blank[None]])  # blank = the last class
        logits = self.ctc_log_scale.exp() * frames @ classes.T
        logp = logits.float().log_softmax(-1).transpose(0, 1)  # [T, B, C]
        flat = torch.tensor([index[t] for ts in targets for t in ts], dtype=torch.long, device=self.device)
        tlen = torch.tensor([len(t) for t in targets], dtype=torch.long, device=self.device)
        return nn.functional.ctc_loss(logp, flat, lengths, tlen, blank=len(ids), zero_infinity=True)

    @torch.no_grad()
    def ctc_transcribe(self, feats: list[Tensor]) -> list[str]:
        """Greedy CTC reading of the connector frames (no LLM): best token per frame, repeats and blanks
        dropped. A cheap view of what the frames say, used to watch alignment early in training."""
        with eval_mode(self):  # no connector dropout in a dev reading
            frames, lengths = self.speech(feats)
        blank = self.llm.get_input_embeddings().weight.shape[0]
        out = []
        for row, n in zip(self.ctc_classes(frames).tolist(), lengths.tolist()):
            ids = [t for i, t in enumerate(row[:n]) if t != blank and (i == 0 or t != row[i - 1])]
            out.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        return out

    # ------------------------------------------------------------------ decoding

    @torch.no_grad()
    def generate_ids(self, turns: list[Tensor], max_new_tokens: int = 48) -> list[list[int]]:
        """Greedy continuation of each prompt embedding sequence [L_i, H] (left padded into one batch): the new
        token ids, up to (not including) the end-of-turn token."""
        unlabelled = [(t, torch.full((len(t),), IGNORE, dtype=torch.long, device=self.device)) for t in turns]
        emb, mask, _ = stack_sequences(unlabelled, left=True)
        end = self.end_ids[-1]
        out = greedy(self.llm, emb, mask, max_new_tokens, end)  # generate()'s output, finished rows dropped
        return [row[: row.index(end)] if end in row else row for row in out]

    @torch.no_grad()
    def generate(self, turns: list[Tensor], max_new_tokens: int = 48) -> list[str]:
        """Greedy continuation of each prompt embedding sequence, decoded."""
        return [self.tokenizer.decode(s, skip_special_tokens=True).strip() for s in self.generate_ids(turns, max_new_tokens)]

    @torch.no_grad()
    def transcribe(self, feats: list[Tensor], max_new_tokens: int = 48) -> list[str]:
        with eval_mode(self):
            instruction = self.asr_instruction()
            return self.generate([self.user_turn(x, instruction) for x in self.speech_inputs(feats)], max_new_tokens)

    # ------------------------------------------------------------------ weights

    def adapter_state(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith("llm.")}

    def save(self, out: str | os.PathLike, sidecar: dict | None = None, dtype: torch.dtype | None = None) -> None:
        """``adapter.safetensors`` (connector + CTC head; floats cast to ``dtype`` if given: load computes in
        float32 again) and ``adapter.json`` (config, feature width, facts)."""
        from safetensors.torch import save

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                 for k, v in self.adapter_state().items()}
        atomic_write(out / "adapter.safetensors", save(state))
        meta = {"config": self.cfg.model_dump(mode="json"), "feature_dim": self.feature_dim, **(sidecar or {})}
        atomic_write(out / "adapter.json", json.dumps(meta, indent=1).encode())

    @staticmethod
    def load_weights(path: str | os.PathLike) -> dict[str, Tensor]:
        """An adapter directory's weights in float32 (exported ones are stored in float16)."""
        from safetensors.torch import load_file

        file = Path(path) / "adapter.safetensors"
        if not file.is_file():
            raise AdapterError(f"{file}: no such file (not a speech adapter directory)")
        return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(file)).items()}

    def load_adapter(self, path: str | os.PathLike) -> None:
        """Take the weights of the adapter directory ``path``; an AdapterError if they do not fit this model."""
        state = self.load_weights(path)
        missing = sorted(set(self.adapter_state()) - set(state))
        try:
            if missing:
                raise RuntimeError(f"it lacks {missing[:5]}")
            self.load_state_dict(state, strict=False)
        except RuntimeError as e:  # a missing key, or a shape that differs
            raise AdapterError(f"{path}/adapter.safetensors does not fit this model: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpeechAdapter:
        path = Path(path)
        try:
            meta = json.loads((path / "adapter.json").read_text())
            cfg = AdapterConfig.model_validate(meta["config"])
        except (OSError, ValueError, KeyError) as e:
            raise AdapterError(f"{path}: not a speech adapter ({e})") from None
        model = cls.build(cfg, int(meta["feature_dim"]))
        model.load_adapter(path)
        model.meta = meta
        return model.eval()
