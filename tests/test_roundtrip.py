"""The must-show: demo user turns → embedded Kokoro (through the spoken-corpus builder, 16 kHz WAV) →
embedded Whisper tiny.en → corpus WER below 15 %.

Size: the first 4 user turns of the first 3 demo dialogues (12 turns, 70 s of speech, ~110 CPU seconds:
about a minute on two idle cores; 108 s and WER 0.9 % here with the cores shared). All 19 user turns of
those dialogues took 184 s (WER 2.2 %); the 62 user turns of 10 dialogues gave WER 1.75 %.

WER normalizer: spokentod.metrics.text.normalize_for_wer on reference and hypothesis (Whisper's English
normalizer: lower case, punctuation removed, contractions expanded, numbers as digits).
"""

from __future__ import annotations

import jiwer
import pytest

from spokentod.backends.base import create
from spokentod.data import corpora
from spokentod.data.manifest import read_manifest
from spokentod.data.synth import synthesize_manifest
from spokentod.metrics.text import normalize_for_wer

DIALOGUES, USER_TURNS = 3, 4


def _first_user_turns(d, n):
    """The dialogue cut after its n-th user turn (turn indices stay valid)."""
    last = [t.index for t in d.user_turns][n - 1]
    return d.model_copy(update={"turns": d.turns[: last + 1]})


@pytest.mark.slow
def test_demo_roundtrip_wer(tmp_path):
    dialogues = [_first_user_turns(d, USER_TURNS) for d in corpora.load("demo", None)[:DIALOGUES]]
    manifest = synthesize_manifest(dialogues, tmp_path / "spoken", tts="kokoro", progress=False)
    asr = create("asr", {"name": "whisper-ct2"})
    refs, hyps = [], []
    for d in read_manifest(manifest):
        for t in d.user_turns:
            assert t.audio and t.audio.sample_rate == 16000 and t.audio.duration > 0.5
            refs.append(normalize_for_wer(t.text))
            hyps.append(normalize_for_wer(asr.transcribe(tmp_path / "spoken" / t.audio.path).text))
    assert len(refs) == DIALOGUES * USER_TURNS
    wer = jiwer.wer(refs, hyps)
    print(f"demo round-trip: {len(refs)} user turns, corpus WER {wer:.3f}")
    assert wer < 0.15
