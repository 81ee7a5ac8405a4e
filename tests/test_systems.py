"""Systems: sentence streaming, shared truncation, prompts, and real embedded turns."""

from __future__ import annotations

from pathlib import Path

import pytest

from spokentod.data import corpora
from spokentod.data.schema import Intent, Speaker, Turn
from spokentod.systems import Context, build_system
from spokentod.systems.messages import audio_messages, count_tokens, text_messages, truncate_turns
from spokentod.systems.prompts import load_prompt
from spokentod.systems.sentences import sentence_chunks


def _stream(text: str):
    return [w + " " for w in text.split(" ")]


def test_sentence_chunks_cut_complete_sentences_in_order():
    text = "Sure! I can help with that. What city are you in? Great."
    chunks = list(sentence_chunks(_stream(text)))
    assert chunks == ["Sure! I can help with that.", "What city are you in?", "Great."]
    assert " ".join(chunks) == text


def test_sentence_chunks_cut_long_first_sentence_at_a_comma():
    text = "What city are you in, and do you have a price range in mind for the hotel tonight, or not?"
    chunks = list(sentence_chunks(_stream(text)))
    assert len(chunks) == 2 and chunks[0].endswith(",")
    assert " ".join(chunks) == text


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
    with pytest.raises(ValueError, match="unknown type"):
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
