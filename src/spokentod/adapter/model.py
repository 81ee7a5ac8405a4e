"""SpeechAdapter: frozen speech encoder features → trained connector → the frozen LLM's input embeddings.

The connector is the DST model's (two strided convolutions + a Transformer, ``dst.model``), so a trained
adapter is the DST model's phase 1 as is. The LLM has no LoRA and never trains: whatever the adapter
learns, the LLM keeps its chat ability, which is what lets the same weights serve as an end-to-end
speech-in LM.

Speech sits inside the user turn of the LLM's own chat format, where text would be:

    <|im_start|>user\\n{instruction}[speech embeddings]<|im_end|>\\n<|im_start|>assistant\\n{reply}<|im_end|>

ASR training uses the instruction "Transcribe: " and the transcript as the reply. No system prompt: it
costs ~20 tokens a step and the LLM answers the same without it.

Auxiliary CTC: each connector frame is scored against the LLM's (frozen, tied) token embeddings plus a
learned blank vector, ``logits = s · h @ [E; blank]ᵀ``, and CTC aligns them with the transcript's tokens.
It needs no LLM forward (cheap), and it pulls each frame towards the embedding of the token spoken there,
which is the space the LLM reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from spokentod.atomic import atomic_write
from spokentod.dst.model.config import ConnectorConfig, EncoderConfig
from spokentod.dst.model.speechdst import IGNORE, Connector, resolve_llm, stack_sequences, target_loss
from spokentod.errors import SpokenTODError


class AdapterError(SpokenTODError):
    pass


class AdapterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    llm: str = "smollm2"
    encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig(window="fit"))
    connector: ConnectorConfig = Field(default_factory=lambda: ConnectorConfig(
        width=384, layers=2, heads=4, ff=1536, dropout=0.1))
    asr_instruction: str = "Transcribe: "
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

    def embed(self, ids: list[int]) -> Tensor:
        return self.llm.get_input_embeddings()(torch.tensor(ids, dtype=torch.long, device=self.device))

    def user_turn(self, frames: Tensor, instruction: list[int]) -> Tensor:
        """Embeddings of one user turn whose content is the instruction then the speech."""
        return torch.cat([self.embed(self.open_ids + instruction), frames, self.embed(self.close_ids)])

    # ------------------------------------------------------------------ ASR training

    def asr_losses(self, feats: list[Tensor], texts: list[str], ce: bool = True) -> dict[str, Tensor]:
        """{"ctc": ..., "ce": ...} for a batch; ``ce=False`` skips the LLM forward (CTC only)."""
        frames, lengths = self.speech(feats)
        targets = [self._ids(t.strip()) for t in texts]
        out = {"ctc": self.ctc_loss(frames, lengths, targets)}
        if ce:
            seqs = []
            for i, tgt in enumerate(targets):
                head = self.user_turn(frames[i, : int(lengths[i])], self.asr_ids)
                reply = tgt + self.end_ids
                emb = torch.cat([head, self.embed(reply)])
                labels = torch.full((len(emb),), IGNORE, dtype=torch.long, device=self.device)
                labels[len(head):] = torch.tensor(reply, device=self.device)
                seqs.append((emb, labels))
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
        frames, lengths = self.speech(feats)
        emb = self.llm.get_input_embeddings().weight
        best = (frames @ torch.cat([emb, self.ctc_blank[None]]).T).argmax(-1)
        out = []
        for row, n in zip(best.tolist(), lengths.tolist()):
            ids = [t for i, t in enumerate(row[:n]) if t != len(emb) and (i == 0 or t != row[i - 1])]
            out.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        return out

    # ------------------------------------------------------------------ decoding

    @torch.no_grad()
    def generate(self, turns: list[Tensor], max_new_tokens: int = 48) -> list[str]:
        """Greedy continuation of each prompt embedding sequence [L_i, H] (left padded into one batch)."""
        unlabelled = [(t, torch.full((len(t),), IGNORE, dtype=torch.long, device=self.device)) for t in turns]
        emb, mask, _ = stack_sequences(unlabelled, left=True)
        out = self.llm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=self.end_ids[-1], pad_token_id=self.end_ids[-1])
        return [self.tokenizer.decode(s, skip_special_tokens=True).strip() for s in out]

    @torch.no_grad()
    def transcribe(self, feats: list[Tensor], max_new_tokens: int = 48) -> list[str]:
        was = self.training
        self.eval()
        try:
            frames, lengths = self.speech(feats)
            turns = [self.user_turn(frames[i, : int(lengths[i])], self.asr_ids) for i in range(len(feats))]
            return self.generate(turns, max_new_tokens)
        finally:
            self.train(was)

    # ------------------------------------------------------------------ weights

    def adapter_state(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith("llm.")}

    def save(self, out: str | os.PathLike, sidecar: dict | None = None) -> None:
        """``adapter.safetensors`` (connector + CTC head) and ``adapter.json`` (config, feature width, facts)."""
        from safetensors.torch import save

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "adapter.safetensors", save({k: v.contiguous() for k, v in self.adapter_state().items()}))
        meta = {"config": self.cfg.model_dump(mode="json"), "feature_dim": self.feature_dim, **(sidecar or {})}
        atomic_write(out / "adapter.json", json.dumps(meta, indent=1).encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpeechAdapter:
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "adapter.json").read_text())
            cfg = AdapterConfig.model_validate(meta["config"])
        except (OSError, ValueError, KeyError) as e:
            raise AdapterError(f"{path}: not a speech adapter ({e})") from None
        model = cls.build(cfg, int(meta["feature_dim"]))
        state = load_file(str(path / "adapter.safetensors"))
        missing = set(model.adapter_state()) - set(state)
        if missing:
            raise AdapterError(f"{path}/adapter.safetensors lacks {sorted(missing)[:5]}")
        model.load_state_dict(state, strict=False)
        model.meta = meta
        return model.eval()
