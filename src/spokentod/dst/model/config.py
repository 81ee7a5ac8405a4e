"""The DST model's configuration (pydantic, no torch: a recipe can be read and checked without it): the
speech encoder, the connector, the text encoder, LoRA, the history format and the instructions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from spokentod.dst.data.examples import HistoryFormat

PrefixMode = Literal["speech", "text_encoder", "text_direct", "none"]
TEXT_MODES = ("text_encoder", "text_direct", "none")  # the prefix modes that read the user turn as text


class EncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["whisper-ct2", "hf-whisper", "hf-wavlm"] = "whisper-ct2"
    model: str = "tiny.en"  # what each kind accepts: model/encoders.py
    revision: str | None = None  # HF kinds: hub revision of a cached model
    device: str = "cpu"  # "cpu", "cuda", "auto" (HF kinds)
    # ct2: any CTranslate2 compute type (float32, int8, float16, ...); HF: a torch dtype (float32, bfloat16, ...)
    compute_type: str = "float32"
    threads: int = 0  # CPU threads (0 = library default); for HF kinds torch's process-wide setting
    freeze: bool = True
    batch_size: int = Field(8, ge=1)  # encode() works in chunks of this many utterances (memory bound)
    # whisper-ct2 only. "full": every utterance is encoded in a 30 s window (Whisper's training setting).
    # "fit": the mel of the 30 s-padded utterance is cut to the utterance plus `fit_margin_s` of silence,
    # rounded up to whole seconds, and encoded alone (CTranslate2 slices its positions to the input): for a
    # 3 s utterance ~6-11x less encoder compute, and the kept frames' cosine similarity to the full window's
    # is 0.91-0.99 (measured on espeak speech, shortest utterances lowest). Train and run a model with the same
    # setting.
    window: Literal["full", "fit"] = "full"
    fit_margin_s: float = Field(1.0, ge=0.0)


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConnectorConfig(_Cfg):
    width: int = 1024
    layers: int = 4
    heads: int = 4
    ff: int = 4096
    kernel: int = 7
    strides: tuple[int, int] = (3, 2)
    max_positions: int = 512  # after the 6x downsampling: ~61 s of 50 Hz encoder frames
    dropout: float = 0.1


class TextEncoderConfig(_Cfg):
    # embedding: a fresh embedding table over the LLM's tokenizer; llm: the LLM's frozen input embeddings
    # followed by a trained projection to the connector width.
    mode: Literal["embedding", "llm"] = "embedding"
    layers: int = 2


class LoraSettings(_Cfg):
    r: int = 32
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class ModelConfig(_Cfg):
    llm: str = "smollm2"  # a local HF dir, a hub id already cached, or an embedded name (smollm2, gemma3-270m)
    dtype: str = "float32"
    attn_implementation: str | None = None
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    connector: ConnectorConfig = Field(default_factory=ConnectorConfig)
    # What the LLM reads of the speech: every connector frame, or one vector per CTC segment, the mean frame
    # (ctc) or the mean soft token (soft) (the speech adapter's compression, adapter/model.py; its CTC head
    # comes with the adapter: recipe `speech_adapter`).
    compress: Literal["none", "ctc", "soft"] = "none"
    text_encoder: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    history: HistoryFormat = Field(default_factory=HistoryFormat)
    # carry_state: the state after the previous user turn goes into the prompt (gold in training, the
    # tracker's own prediction when tracking) and the target's "state" holds only what the turn changes
    # (examples.state_update; "none" removes a slot). The state then needs no long history to be rebuilt
    # (history.max_turns can be small) and the target is a few slots, not all of them: fewer tokens a step.
    carry_state: bool = False
    dst_instruction: str = "Transcribe the user's turn and give the dialogue state as JSON:"
    asr_instruction: str = "Transcribe:"
