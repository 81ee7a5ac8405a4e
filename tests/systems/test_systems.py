"""Systems: sentence streaming, shared truncation, prompts, and real embedded turns."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from spokentod.audio import load_audio
from spokentod.backends.base import AudioOut, Completion
from spokentod.data import corpora
from spokentod.data.schema import Audio, Intent, Speaker, Turn
from spokentod.systems import CascadeSystem, Context, SystemConfig, build_system
from spokentod.systems.cascade import PAUSE_S
from spokentod.systems.messages import audio_messages, count_tokens, text_messages, truncate_turns
from spokentod.systems.prompts import load_prompt
from spokentod.systems.sentences import ChunkPolicy, sentence_chunks


def _stream(text: str):
    return [w + " " for w in text.split(" ")]


def test_sentence_chunks_short_first_chunk_then_complete_sentences_in_order():
    text = "Sure! I can help with that. What city are you in? Great."
    chunks = list(sentence_chunks(_stream(text)))
    assert chunks == ["Sure!", "I can help with that.", "What city are you in?", "Great."]
    assert " ".join(chunks) == text
    whole = list(sentence_chunks(_stream(text), ChunkPolicy(first_chunk_words=0, first_min_words=3)))
    assert whole == ["Sure! I can help with that.", "What city are you in?", "Great."]


def test_sentence_chunks_cut_long_sentences_at_a_comma():
    text = "What city are you in, and do you have a price range in mind for the hotel tonight, or not?"
    chunks = list(sentence_chunks(_stream(text)))
    assert chunks == ["What city are you in,",  # first chunk: the first clause mark
                      "and do you have a price range in mind for the hotel tonight,", "or not?"]
    assert " ".join(chunks) == text


# ------------------------------------------------------------ streaming vs sequential cascade (fake backends)

_RATE = 1000


def _encode(text: str) -> np.ndarray:
    """Fake speech: one non-zero sample per character, so a WAV can be read back into the text it says."""
    return np.array([(ord(c) - 31) / 128 for c in text], dtype=np.float32)


def _decode_segments(path: Path) -> list[str]:
    """The texts of a reply WAV: runs of non-zero samples, split at the silent gaps between chunks."""
    x = load_audio(path, target_rate=None).samples
    return _runs(np.rint(x * 128).astype(int))


def _runs(codes: np.ndarray) -> list[str]:
    out, cur = [], []
    for c in codes:
        if c:
            cur.append(chr(int(c) + 31))
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


class _ASR:
    def transcribe(self, path):
        return SimpleNamespace(text="I need a hotel in the center")


class _LLM:
    def __init__(self, text: str, fail_after: int | None = None):
        self.text, self.fail_after, self.done = text, fail_after, threading.Event()

    def _pieces(self):
        return _stream(self.text)

    def stream(self, messages, params=None):
        try:
            for i, p in enumerate(self._pieces()):
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError("model fell over")
                yield p
        finally:
            self.done.set()

    def chat(self, messages, params=None):
        return Completion(text="".join(self._pieces()), ttft=0.0)


class _TTS:
    def __init__(self, hold_first: threading.Event | None = None, fail_on: int | None = None):
        self.calls: list[str] = []
        self.hold_first, self.fail_on = hold_first, fail_on

    def synthesize(self, text, voice=None):
        self.calls.append(text)
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise ValueError("cannot speak")
        if self.hold_first is not None and len(self.calls) == 1:
            self.hold_first.wait(5)  # the LLM runs ahead: later chunks queue up meanwhile
            time.sleep(0.2)
        return AudioOut(_encode(text), _RATE)


_REPLY = ("Sure, I can find you a hotel. The Grand is right in the center and it has rooms tonight. "
          "It costs 10,000 yen at 10:30 check-in. Shall I book it?")


def _cascade(tmp_path: Path, llm, tts, streaming: bool, **kw) -> CascadeSystem:
    return CascadeSystem(_ASR(), llm, tts, streaming=streaming, audio_root=tmp_path, **kw)


def _user_turn() -> tuple[Context, Turn]:
    user = Turn(index=2, speaker=Speaker.user, text="a hotel", audio=Audio(path="u.wav", sample_rate=16000,
                                                                          duration=1.0))
    return Context("d1", _turns(2)), user


@pytest.mark.parametrize("merge", [False, True])
def test_streaming_audio_is_its_chunks_in_order_and_says_what_sequential_says(tmp_path: Path, merge: bool):
    ctx, user = _user_turn()
    seq_tts, str_tts = _TTS(), _TTS()
    llm = _LLM(_REPLY)
    if merge:  # hold the first synthesis until generation is over, so the later chunks wait together
        str_tts.hold_first = llm.done
    seq = _cascade(tmp_path, _LLM(_REPLY), seq_tts, streaming=False).respond(ctx, user, tmp_path / "seq.wav")
    st = _cascade(tmp_path, llm, str_tts, streaming=True,
                  chunking={"merge_ready": merge}).respond(ctx, user, tmp_path / "str.wav")
    assert seq.error is None and st.error is None
    assert st.text == seq.text == _REPLY
    # sequential: one call with the whole reply; streaming: the chunker's chunks, the first one alone
    assert seq_tts.calls == [_REPLY] and _decode_segments(tmp_path / "seq.wav") == [_REPLY]
    chunks = list(sentence_chunks(_stream(_REPLY)))
    assert str_tts.calls[0] == chunks[0] == "Sure,"
    if merge:
        assert 1 < len(str_tts.calls) < len(chunks)  # the chunks that waited were spoken in one call
    else:
        assert str_tts.calls == chunks
    # the streamed WAV is the calls' audio, in order, with a silent gap between them ...
    assert _decode_segments(tmp_path / "str.wav") == str_tts.calls == st.extra["tts_chunks"]
    gap = int(PAUSE_S * _RATE)
    spoken = sum(len(c) for c in str_tts.calls)
    assert st.audio_seconds == pytest.approx((spoken + (len(str_tts.calls) - 1) * gap) / _RATE, abs=1e-9)
    # ... and says the same words as the sequential reply
    assert " ".join(str_tts.calls).split() == _REPLY.split()
    t = st.timings
    assert t["asr"] <= t["ttft"] <= t["first_chunk"] <= t["first_audio"] <= t["total"]
    assert t["stall"] >= 0 and "stall" not in seq.timings


def test_streaming_records_a_tts_failure_and_stops_generating(tmp_path: Path):
    ctx, user = _user_turn()
    r = _cascade(tmp_path, _LLM(_REPLY), _TTS(fail_on=2), streaming=True).respond(ctx, user, tmp_path / "x.wav")
    assert r.error and r.error.startswith("tts:") and "cannot speak" in r.error
    assert not (tmp_path / "x.wav").exists()
    assert not [th for th in threading.enumerate() if th.name == "spokentod-tts"]


def test_streaming_records_an_llm_failure_and_ends_the_tts_worker(tmp_path: Path):
    ctx, user = _user_turn()
    r = _cascade(tmp_path, _LLM(_REPLY, fail_after=8), _TTS(), streaming=True).respond(ctx, user)
    assert r.error and r.error.startswith("llm:") and "model fell over" in r.error
    assert not [th for th in threading.enumerate() if th.name == "spokentod-tts"]


def test_cascade_identity_records_the_chunking_when_streaming(tmp_path: Path):
    on = _cascade(tmp_path, _LLM("x"), _TTS(), streaming=True, chunking={"first_chunk_words": 3}).identity()
    assert on["chunking"]["first_chunk_words"] == 3
    assert "chunking" not in _cascade(tmp_path, _LLM("x"), _TTS(), streaming=False).identity()


def _turns(n: int) -> list[Turn]:
    return [Turn(index=i, speaker=Speaker.user if i % 2 == 0 else Speaker.agent, text=f"turn {i} says hello")
            for i in range(n)]


def test_truncation_drops_oldest_whole_turns_and_flags_it():
    turns = _turns(6)
    kept, flag = truncate_turns(turns, max_tokens=2 * count_tokens(turns[0].text))
    assert [t.index for t in kept] == [4, 5] and flag
    kept, flag = truncate_turns(turns, None)
    assert kept == turns and not flag


def test_text_and_audio_messages_hold_the_same_gold_history(tmp_path: Path):
    turns = _turns(4)
    msgs = text_messages("sys", turns, "now")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in msgs[1:-1]] == [t.text for t in turns]
    amsgs = audio_messages("sys", turns, tmp_path / "u.wav", tmp_path, history="text")
    assert [m["content"][0]["text"] for m in amsgs[1:-1]] == [t.text for t in turns]
    assert amsgs[-1]["content"][0] == {"type": "audio", "audio": str(tmp_path / "u.wav")}
    with pytest.raises(ValueError, match="has no audio"):
        audio_messages("sys", turns, tmp_path / "u.wav", tmp_path, history="audio")


def test_prompt_is_versioned_and_hashed():
    p = load_prompt()
    assert p.name == "sales_agent_v1" and len(p.sha256) == 64
    rendered = p.render(Intent(type="FindRestaurants", description="Find a restaurant"))
    assert "Find a restaurant" in rendered and "{intent_hint}" not in rendered
    assert "Find a restaurant" not in p.render(Intent(type="X", description="Find a restaurant"), use_intent=False)


def test_unknown_system_type_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown system type 'nope'"):
        build_system("x", {"type": "nope"})


def test_failing_backend_is_recorded_with_its_stage():
    # nothing listens on port 9: the OpenAI-compatible client fails; the reply records it, no exception
    sys_ = build_system("t", {"type": "text", "llm": {"name": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                      "model": "x", "max_attempts": 1, "timeout": 2}})
    d = corpora.load("demo", None)[0]
    r = sys_.respond(Context.gold(d, 2), d.turns[2])
    assert r.error and r.error.startswith("llm:") and r.text == ""
    assert "total" in r.timings


@pytest.mark.slow
def test_text_system_answers_with_embedded_llm():
    d = corpora.load("demo", None)[0]
    sys_ = build_system("text", {"type": "text", "llm": {"name": "smollm2"}, "params": {"max_tokens": 16}})
    r = sys_.respond(Context.gold(d, 2), d.turns[2])
    assert r.error is None and r.text and r.extra["tokens"] > 0
    assert sys_.identity()["prompt_sha256"] == load_prompt().sha256


def test_bench_config_chunking_reaches_the_cascade():
    cfg = SystemConfig(type="cascade", asr="whisper-ct2", llm="smollm2", tts="espeak",
                       chunking={"first_chunk_words": 3})
    made = []
    sys_ = build_system("c", cfg, make=lambda kind, spec: made.append(kind) or object())
    assert sys_.chunking.first_chunk_words == 3 and made == ["asr", "llm", "tts"]
    assert sys_.identity()["chunking"]["first_chunk_words"] == 3
