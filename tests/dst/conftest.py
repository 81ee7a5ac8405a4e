"""Fixtures of the DST tests (the shared ones, tiny_llm among them, are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from spokentod.dst.model.config import ConnectorConfig, LoraSettings, ModelConfig, TextEncoderConfig


@pytest.fixture(scope="session")
def tiny_dst_config(tiny_llm):
    """A factory of tiny SpeechDST configs on the tiny random Llama: a 1-layer connector of width 32, a
    1-layer text encoder, LoRA r = alpha = 4 without dropout."""

    def make(mode: str = "embedding", connector_dropout: float = 0.0) -> ModelConfig:
        return ModelConfig(
            llm=str(tiny_llm),
            connector=ConnectorConfig(width=32, layers=1, heads=2, ff=64, dropout=connector_dropout),
            text_encoder=TextEncoderConfig(mode=mode, layers=1),
            lora=LoraSettings(r=4, alpha=4, dropout=0.0),
        )

    return make
