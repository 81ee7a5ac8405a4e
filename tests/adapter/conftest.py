"""Shared by the adapter tests: a tiny adapter corpus of real espeak-ng utterances."""

from __future__ import annotations

import pytest

from spokentod.adapter import corpus as C
from spokentod.adapter.corpus import Utterance


@pytest.fixture(scope="session")
def render_adapter_corpus(tmp_path_factory):
    """make(texts) → a corpus directory: each text rendered once for train and once for dev, with a manifest."""

    def make(texts: list[str]):
        root = tmp_path_factory.mktemp("adapter-corpus")
        rows = []
        for i, text in enumerate(texts):
            for split in ("train", "dev"):
                u = Utterance(id=f"{split}{i}", text=text, split=split, source="test", tts="espeak", voice="en-us",
                              wpm=160, pitch=50, audio=f"audio/{split}/{i}.wav")
                _, dur, err = C._render_one(str(root), u.model_dump(), "float32")
                assert err is None
                rows.append(u.model_copy(update={"duration": dur}))
        (root / "manifest.jsonl").write_text("".join(u.model_dump_json() + "\n" for u in rows))
        return root

    return make
