"""Prompt-prefix KV reuse (backends/llm/_prefix_cache.py) on a tiny random Llama: the text is the one a
cold generation gives, the reuse happens where prompts share leading tokens and only there, and the cache
stays bounded."""

from __future__ import annotations

import pytest

from spokentod.backends.base import GenParams, create
from spokentod.backends.llm._prefix_cache import MIN_REUSE
from spokentod.serve.schema import completion_body

GREEDY = GenParams(max_tokens=12)
SYSTEM = {"role": "system", "content": "You are a sales agent for a travel company. " * 6}


def _dialogue(n: int) -> list[dict[str, str]]:
    """The prompt at user turn n under gold context: system prompt + the gold turns before + the user."""
    msgs = [SYSTEM]
    for i in range(n):
        msgs += [{"role": "user", "content": f"user turn {i} about trains to Cambridge"},
                 {"role": "assistant", "content": f"agent turn {i}: the 9:15 leaves from platform {i}"}]
    return msgs + [{"role": "user", "content": f"user turn {n}: how much is a return ticket?"}]


@pytest.fixture(scope="module")
def pair(tiny_llm):
    cold = create("llm", {"name": "hf", "model": str(tiny_llm), "threads": 1, "prefix_cache": 0})
    warm = create("llm", {"name": "hf", "model": str(tiny_llm), "threads": 1, "prefix_cache": 2})
    return cold, warm


def test_reused_prefix_gives_the_cold_text_and_counts_the_reused_tokens(pair):
    cold, warm = pair
    for n in range(4):  # each prompt extends the one before: everything but the new turns is reused
        a, b = cold.chat(_dialogue(n), GREEDY), warm.chat(_dialogue(n), GREEDY)
        assert b.text == a.text and b.tokens == a.tokens
        reused, total = b.timings.extra["cached_prompt_tokens"], b.timings.extra["prompt_tokens"]
        assert a.timings.extra["cached_prompt_tokens"] == 0
        if n == 0:
            assert reused == 0  # nothing seen yet
        else:
            assert MIN_REUSE <= reused < total  # the last prompt token is always read again
    # the same prompt again: all but its last token come from the cache, same text
    again = warm.chat(_dialogue(3), GREEDY)
    assert again.text == a.text
    assert again.timings.extra["cached_prompt_tokens"] == again.timings.extra["prompt_tokens"] - 1


def test_unrelated_prompt_reuses_nothing_and_the_cache_stays_bounded(pair):
    _, warm = pair
    other = [{"role": "system", "content": "Reply in French."}, {"role": "user", "content": "Bonjour"}]
    c = warm.chat(other, GREEDY)
    assert c.timings.extra["cached_prompt_tokens"] == 0  # only the template's few opening tokens match
    assert len(warm.gen.prefixes) == 2  # size 2: the oldest prompt was dropped
    assert warm.identity()["prefix_cache"] is True and "prefix_cache" not in pair[0].identity()


def test_an_abandoned_stream_leaves_a_usable_entry(pair):
    cold, warm = pair
    stream = warm.stream(_dialogue(5), GREEDY)
    next(stream)
    stream.close()  # the consumer stops after one piece; generation is cancelled mid-reply
    b = warm.chat(_dialogue(5), GREEDY)
    assert b.timings.extra["cached_prompt_tokens"] == b.timings.extra["prompt_tokens"] - 1
    assert b.text == cold.chat(_dialogue(5), GREEDY).text


def test_served_usage_reports_cached_tokens(pair):
    _, warm = pair
    warm.chat(_dialogue(6), GREEDY)
    out = warm.chat(_dialogue(6), GREEDY)
    usage = completion_body("tiny", out.text, out)["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1 > 0
