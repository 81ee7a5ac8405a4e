"""Judge output parsing (real SmolLM2 outputs kept as fixtures + hand-made malformed replies), failed judge
calls, repeats, log-probability weighting and the weak-judge flag."""

from __future__ import annotations

import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from spokentod.backends.base import Backend, Completion, create
from spokentod.metrics.judge import Judge, combine, judge_parse_counts, load_judge_prompt, weakness
from spokentod.metrics.judge_logprobs import weighted_scores
from spokentod.metrics.judge_parse import (
    FAILURES,
    ParseError,
    failures_schema,
    parse_failures,
    parse_quality,
    quality_schema,
)
from spokentod.metrics.registry import Missing

FIXTURES = Path(__file__).parent / "fixtures" / "judge"
PARSERS = {"quality": parse_quality, "failures": parse_failures}


def _case_id(c: dict) -> str:
    return c["name"]


HANDMADE = json.loads((FIXTURES / "handmade_malformed.json").read_text())["cases"]
REAL = sorted(FIXTURES.glob("smollm2_*.json"))


@pytest.mark.parametrize("case", HANDMADE, ids=_case_id)
def test_handmade_judge_replies_are_parsed_or_rejected_precisely(case):
    parse, exp = PARSERS[case["kind"]], case["expect"]
    if "error" in exp:
        with pytest.raises(ParseError, match=exp["error"].replace("(", r"\(").replace(")", r"\)")):
            parse(case["output"])
        return
    got = parse(case["output"])
    for k, v in exp["values"].items():
        assert got.values[k] == v, (k, got.values)
    for k, why in exp["missing"].items():
        assert why in got.missing[k], (k, got.missing)
        if k in got.values:
            assert got.values[k] is None  # missing is None, never 0
    if not exp["missing"]:
        assert not got.missing, got.missing
    if "notes" in exp:
        assert any(exp["notes"] in n for n in got.notes), got.notes
    if "primary" in exp:
        assert got.primary == exp["primary"]


@pytest.mark.skipif(not REAL, reason="no SmolLM2 fixtures collected")
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_real_smollm2_outputs_parse_to_values_or_precise_reasons(path):
    fx = json.loads(path.read_text())
    assert fx["backend"]["name"] == "smollm2" and fx["params"]["temperature"] == 0.0
    # the fixture was made with the prompt file as it is now
    assert load_judge_prompt(fx["prompt"]).sha256 == fx["prompt_sha256"]
    outputs = ("naturalness", "consistency") if fx["kind"] == "quality" else \
        tuple(f"fail_{f}_{k}" for f in FAILURES for k in ("severity", "present"))
    try:
        got = PARSERS[fx["kind"]](fx["output"])
    except ParseError as e:  # a weak judge: recorded with a reason naming what was wrong
        reason = str(e)
        assert reason.startswith(("no JSON object", "malformed JSON", "truncated JSON", "empty judge reply",
                                  "judge reply is not a JSON object")), reason
        result = combine([(fx["output"], reason, None)], outputs, weakness(_Named("smollm2")))
        assert all(v is None for v in result.values.values())
        assert all(result.missing[o] == f"judge reply unparsed: {reason}" for o in outputs)
        assert result.judge["parse"] == ["failed"]
        assert result.judge["weak"] is True
        return
    for o in outputs:
        v = got.values.get(o)
        assert (v is not None and 0 <= v <= 100) or got.missing.get(o), (o, got)


# ---------------------------------------------------------------- judge plumbing


class _Named(Backend):
    kind = "llm"

    def __init__(self, name: str):
        self.name = name

    def identity(self):
        return {"kind": "llm", "name": self.name}


class ScriptedLLM(Backend):
    """Replies with the given texts in turn (real fixture outputs or hand-made ones); counts calls."""

    kind, name = "llm", "scripted"

    def __init__(self, texts: list[str]):
        self.texts, self.calls, self.params = list(texts), 0, []

    def identity(self):
        return {"kind": "llm", "name": "scripted", "texts": self.texts}

    def chat(self, messages, params=None):
        self.params.append(params)
        text = self.texts[self.calls % len(self.texts)]
        self.calls += 1
        return Completion(text)

    def stream(self, messages, params=None):
        yield self.chat(messages, params).text


GOOD = '{"naturalness": {"reason": "fluent", "score": %d}, "consistency": {"reason": "fits", "score": %d}}'


def _ask(judge: Judge):
    return judge.ask("quality", parse_quality, history="User: hi", reply="hello there", topic="restaurants")


def test_repeats_give_mean_spread_and_n_at_temperature_zero():
    llm = ScriptedLLM([GOOD % (80, 60), GOOD % (90, 70), "no json at all"])
    judge = Judge(llm, repeats=3)
    out = combine(_ask(judge), ("naturalness", "consistency"), None, weight_key=lambda o: o)
    assert out.values == {"naturalness": 85.0, "consistency": 65.0}
    assert out.judge["repeats"]["naturalness"] == {"n": 2, "sd": 5.0, "values": [80.0, 90.0]}
    assert out.judge["unparsed"] == ["no JSON object in judge reply (prose): 'no json at all'"]
    assert all(p.temperature == 0.0 for p in llm.params) and [p.seed for p in llm.params] == [0, 1, 2]


def test_each_prompt_sends_its_schema_and_every_reply_gets_a_parse_status():
    fenced = "Here you go:\n```json\n" + GOOD % (70, 50) + "\n```"
    llm = ScriptedLLM([GOOD % (80, 60), fenced, "no json at all"])
    judge = Judge(llm, repeats=3, logprobs=False)
    out = combine(_ask(judge), ("naturalness", "consistency"), None, weight_key=lambda o: o)
    assert [p.json_schema for p in llm.params] == [quality_schema()] * 3
    assert out.judge["parse"] == ["as_is", "repaired", "failed"]
    assert out.judge["repairs"] == ["extracted the JSON object from surrounding text"]
    assert out.values == {"naturalness": 75.0, "consistency": 55.0}  # repaired replies count, failed ones not
    judge.ask("failures", parse_failures, history="User: hi", reply="hello", topic="restaurants")
    assert llm.params[-1].json_schema == failures_schema()
    assert "primary_failure" in llm.params[-1].json_schema["required"]

    unconstrained = Judge(ScriptedLLM([GOOD % (1, 2)]), logprobs=False, constrain=False)
    _ask(unconstrained)
    assert unconstrained.raw_backend.params[0].json_schema is None
    assert "json_schema" in judge.identity() and "json_schema" not in unconstrained.identity()  # cache keys differ


def test_a_reply_that_never_parses_is_missing_as_unparsed_and_counted():
    judge = Judge(ScriptedLLM(["I think it is fine."]), logprobs=False)
    out = combine(_ask(judge), ("naturalness", "consistency"), None, weight_key=lambda o: o)
    assert out.values == {"naturalness": None, "consistency": None}
    assert out.missing["naturalness"] == "judge reply unparsed: no JSON object in judge reply (prose): " \
                                         "'I think it is fine.'"
    recs = [{"judge": {"quality_judge": {"parse": ["as_is", "repaired"]}, "failures_judge": {"parse": ["failed"]}}},
            {"judge": {"quality_judge": {"parse": ["failed"]}}}, {"judge": {}}, {}]
    assert judge_parse_counts(recs) == {"quality": {"as_is": 1, "repaired": 1, "failed": 1},
                                        "failures": {"as_is": 0, "repaired": 0, "failed": 1}}


def test_judge_schemas_follow_the_prompts_forms():
    q = quality_schema()
    assert list(q["properties"]) == ["naturalness", "consistency"] and q["additionalProperties"] is False
    assert list(q["properties"]["naturalness"]["properties"]) == ["reason", "score"]  # reason before the score
    f = failures_schema()
    assert list(f["properties"]) == [*FAILURES, "primary_failure"]
    assert f["properties"]["primary_failure"]["enum"] == ["none", *FAILURES]
    for prompt, schema in (("judge_quality_v1", q), ("judge_failures_v1", f)):
        example = next(x for x in load_judge_prompt(prompt).template.splitlines() if x.startswith("{"))  # its form
        assert all(f'"{k}"' in example for k in schema["properties"])


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_failed_judge_call_is_missing_with_reason_and_not_cacheable():
    llm = create("llm", {"name": "openai", "model": "judge", "base_url": f"http://127.0.0.1:{_dead_port()}/v1",
                         "max_attempts": 1, "timeout": 5})
    judge = Judge(llm, logprobs=False)
    with pytest.raises(Missing) as e:
        _ask(judge)
    assert "judge call failed" in e.value.reason and "cannot connect" in e.value.reason
    assert e.value.cacheable is False


def test_weak_judge_flag():
    assert "too small" in weakness(_Named("smollm2"))
    assert weakness(create("llm", {"name": "openai", "model": "SmolLM2-360M-Instruct"}))
    assert weakness(create("llm", {"name": "openai", "model": "Qwen2.5-72B-Instruct"})) is None
    assert Judge(_Named("smollm2")).describe()["weak"] is True
    llamacpp_smollm2 = type("LlamaCpp", (_Named,), {"identity": lambda self: {
        "name": "llamacpp", "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"}})("llamacpp")
    assert "sub-1B" in weakness(llamacpp_smollm2)  # the same weights through llama.cpp are as weak


# ---------------------------------------------------------------- log-probabilities (OpenAI-compatible server)

TOKENS = ['{"naturalness": {"reason": "ok", "score":', " 80", '}, "consistency": {"reason": "fine", "score": ',
          "6", "5", "}}"]


def _content() -> list[dict]:
    out = [{"token": t, "logprob": 0.0, "top_logprobs": []} for t in TOKENS]
    out[1]["top_logprobs"] = [{"token": " 80", "logprob": math.log(0.6)}, {"token": " 90", "logprob": math.log(0.3)},
                              {"token": "70", "logprob": math.log(0.1)}]
    return out


def test_weighted_scores_expectation_over_number_tokens():
    text = "".join(TOKENS)
    w, notes = weighted_scores(text, _content())
    assert w == {"naturalness": pytest.approx(0.6 * 80 + 0.3 * 90 + 0.1 * 70)}
    assert any("consistency: the number is not one token of its own" in n for n in notes)
    assert weighted_scores(text, None) == ({}, ["no log-probabilities returned"])


class _FakeOpenAI(BaseHTTPRequestHandler):
    bodies: ClassVar[list] = []

    def do_POST(self):  # http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _FakeOpenAI.bodies.append(body)
        data = json.dumps({"choices": [{"message": {"content": "".join(TOKENS)}, "finish_reason": "stop",
                                        "logprobs": {"content": _content()}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_openai_judge_asks_for_logprobs_and_uses_the_weighted_score(tmp_path):
    from spokentod.backends.cache import Cache

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        llm = create("llm", {"name": "openai", "model": "judge",
                             "base_url": f"http://127.0.0.1:{server.server_address[1]}/v1"})
        judge = Judge(llm, cache=Cache(tmp_path / "c.sqlite"))
        assert judge.logprobs is True
        out = combine(_ask(judge), ("naturalness", "consistency"), None, weight_key=lambda o: o)
        assert out.values["naturalness"] == pytest.approx(82.0)  # weighted, the sampled token said 80
        assert out.values["consistency"] == 65.0  # split number: sampled
        assert out.judge["score_source"] == "logprob-weighted" and out.judge["sampled"]["naturalness"] == 80.0
        body = _FakeOpenAI.bodies[-1]
        assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["temperature"] == 0.0
        n = len(_FakeOpenAI.bodies)
        _ask(judge)  # the same request again comes from the cache
        assert len(_FakeOpenAI.bodies) == n
    finally:
        server.shutdown()
