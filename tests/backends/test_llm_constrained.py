"""JSON-schema-constrained decoding in the transformers backends (GenParams.json_schema, _constrain.py).

A 2-layer random Llama with the real SmolLM2 tokenizer writes garbage on its own; constrained, whatever it
writes must be JSON that follows the schema. The judge's own schemas are used, so this is also the check
that a local judge of any quality answers in a form the judge can read. The real SmolLM2 then answers a
judge prompt in the schema."""

from __future__ import annotations

import json

import pytest

from spokentod.backends.base import GenParams, create
from spokentod.backends.llm._constrain import SchemaError
from spokentod.metrics.judge_parse import (
    FAILURES,
    failures_schema,
    parse_failures,
    parse_quality,
    quality_schema,
)

MSGS = [{"role": "user", "content": "Rate this reply as JSON."}]
SMALL = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                          "people": {"type": "integer", "minimum": 1, "maximum": 8},
                                          "when": {"type": "string", "enum": ["lunch", "dinner"]},
                                          "vip": {"type": "boolean"}},
         "required": ["name", "people", "when", "vip"], "additionalProperties": False}


@pytest.fixture(scope="module")
def tiny(tiny_llm):
    return create("llm", {"name": "hf", "model": str(tiny_llm), "prefix_cache": 0})


def _follows_small(obj):
    assert list(obj) == ["name", "people", "when", "vip"]  # every key, in the schema's order
    assert isinstance(obj["name"], str) and len(obj["name"]) <= 12
    assert isinstance(obj["people"], int) and 1 <= obj["people"] <= 8
    assert obj["when"] in ("lunch", "dinner") and isinstance(obj["vip"], bool)


def test_a_random_model_writes_garbage_unconstrained(tiny):
    text = tiny.chat(MSGS, GenParams(max_tokens=40)).text
    with pytest.raises(ValueError):
        json.loads(text)


@pytest.mark.parametrize("params", [GenParams(max_tokens=120), GenParams(max_tokens=120, temperature=1.0, seed=3)],
                         ids=["greedy", "sampled"])
def test_constrained_output_follows_the_schema_and_ends_the_turn(tiny, params):
    c = tiny.chat(MSGS, GenParams(**{**params.as_dict(), "json_schema": SMALL}))
    _follows_small(json.loads(c.text))
    assert c.finish_reason == "stop"  # the object closed, then only the end of the turn was allowed


def test_stream_pieces_join_to_the_constrained_chat_text(tiny):
    p = GenParams(max_tokens=120, json_schema=SMALL)
    assert "".join(tiny.stream(MSGS, p)) == tiny.chat(MSGS, p).text


def test_the_judge_schemas_make_a_random_model_parseable(tiny):
    q = tiny.chat(MSGS, GenParams(max_tokens=400, json_schema=quality_schema()))
    parsed = parse_quality(q.text)
    assert list(json.loads(q.text)) == ["naturalness", "consistency"]  # the prompt's order, not sorted
    assert parsed.status == "as_is" and not parsed.missing
    assert all(0 <= v <= 100 and v == int(v) for v in parsed.values.values())
    f = tiny.chat(MSGS, GenParams(max_tokens=900, json_schema=failures_schema()))
    parsed = parse_failures(f.text)
    assert parsed.status == "as_is" and not parsed.missing and parsed.primary in ("none", *FAILURES)


def test_a_schema_the_engine_cannot_use_is_a_clear_error(tiny):
    bad = {"type": "object", "properties": {"a": {"type": "no-such-type"}}}
    with pytest.raises(SchemaError, match="JSON schema not usable for constrained decoding"):
        tiny.chat(MSGS, GenParams(max_tokens=8, json_schema=bad))
    assert tiny.chat(MSGS, GenParams(max_tokens=4)).text is not None  # the backend is still usable


@pytest.mark.slow
def test_smollm2_answers_a_judge_prompt_in_the_schema():
    from spokentod.metrics.judge import load_judge_prompt

    llm = create("llm", {"name": "smollm2"})
    prompt = load_judge_prompt("judge_quality_v1").render(
        history="User: I am planning a hiking trip in the Alps.\nAgent: Lovely! Where to?\nUser: Chamonix.",
        reply="Great choice! Shall I look for hotels in Chamonix for you?", topic="hotel booking")
    c = llm.chat([{"role": "user", "content": prompt}], GenParams(max_tokens=200, json_schema=quality_schema()))
    parsed = parse_quality(c.text)
    assert parsed.status == "as_is" and not parsed.missing, c.text
